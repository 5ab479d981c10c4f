package raftstore

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// storedInstance is an instance as the FSM keeps it: its protobuf
// encoding, one allocation of a couple of hundred bytes, instead of a
// message with a metadata map, a tag slice and a string per field (about
// three times that). Beside it are the few fields the FSM's own indexes
// and counts read on every change of another instance (whose node and
// session it belongs to, its health, whether it has a check), so that
// finding a node's or a session's instances decodes nothing. Readers get a
// freshly decoded message (instance), theirs to keep or change.
//
// The encoding is deterministic, so equal instances are equal bytes (a
// registration's is made from its entry's, stampedInstance, which agents
// encode deterministically), and its length is the instance's proto.Size,
// which max_registry_bytes counts, with a fixed overhead per instance and
// per service (quota.go). Stored encodings are never changed: a change
// stores a new one.
type storedInstance struct {
	enc     []byte
	node    string // shared (sharedValues)
	session string // shared (sharedValues)
	health  pb.Health
	checked bool // the instance has a health check
}

// encodeInstance returns inst as the FSM stores it, its names shared
// through s.
func encodeInstance(s *sharedValues, inst *pb.Instance) (storedInstance, error) {
	enc, err := proto.MarshalOptions{Deterministic: true}.Marshal(inst)
	if err != nil {
		return storedInstance{}, fmt.Errorf("%w: encode instance %s/%s: %v", ErrInvalidArgument, inst.Service, inst.Id, err)
	}
	return storedFrom(s, inst, enc), nil
}

// storedFrom returns the stored form of inst whose encoding is enc, which
// it keeps.
func storedFrom(s *sharedValues, inst *pb.Instance, enc []byte) storedInstance {
	return storedInstance{
		enc:     enc,
		node:    s.string(inst.Node),
		session: s.string(inst.Session),
		health:  inst.Health,
		checked: inst.Check != nil,
	}
}

// instance decodes the stored instance. The bytes were encoded from a
// valid message (encodeInstance) or decoded once before they were kept
// (a snapshot's records are checked as they are read), so decoding them
// again cannot fail; were it to, the instance would come back with what
// could be decoded, never a crash.
func (s storedInstance) instance() *pb.Instance {
	inst := &pb.Instance{}
	_ = proto.Unmarshal(s.enc, inst)
	return inst
}

// valid reports whether s holds an instance.
func (s storedInstance) valid() bool { return len(s.enc) > 0 }

// instanceRecord is a stored instance with its names, as a snapshot lists
// it.
type instanceRecord struct {
	service, id string
	stored      storedInstance
}

// sortRecords sorts records by service and id, the order of a snapshot.
func sortRecords(recs []instanceRecord) {
	slices.SortFunc(recs, func(a, b instanceRecord) int {
		if c := strings.Compare(a.service, b.service); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
}

// Field numbers snapshotEvent writes and reads, and those a registration's
// stored encoding gets from the state machine (stampedInstance).
var (
	registerField       = fieldNumber((&pb.Command{}).ProtoReflect().Descriptor(), "register")
	createRevisionField = fieldNumber((&pb.Instance{}).ProtoReflect().Descriptor(), "create_revision")
	healthSinceField    = fieldNumber((&pb.Instance{}).ProtoReflect().Descriptor(), "health_since")

	eventInstanceField = fieldNumber((&pb.Event{}).ProtoReflect().Descriptor(), "instance")
	modRevisionField   = fieldNumber((&pb.Instance{}).ProtoReflect().Descriptor(), "mod_revision")
)

func fieldNumber(md protoreflect.MessageDescriptor, name protoreflect.Name) protowire.Number {
	return md.Fields().ByName(name).Number()
}

// snapshotEvent returns the PUT event of a watch snapshot for s: with the
// instance decoded, or, encoded, with no Instance and the instance field's
// bytes in the event's unknown fields (Watcher.EncodeSnapshots).
func (s storedInstance) snapshotEvent(encoded bool) *pb.Event {
	if !encoded {
		inst := s.instance()
		return &pb.Event{Type: pb.Event_PUT, Instance: inst, Revision: inst.ModRevision}
	}
	ev := &pb.Event{Type: pb.Event_PUT, Revision: encodedModRevision(s.enc)}
	raw := make([]byte, 0, len(s.enc)+2*binary.MaxVarintLen32)
	raw = protowire.AppendTag(raw, eventInstanceField, protowire.BytesType)
	raw = protowire.AppendBytes(raw, s.enc)
	ev.ProtoReflect().SetUnknown(raw)
	return ev
}

// encodedModRevision reads an encoded instance's mod_revision (the last
// one, as decoding does), or 0.
func encodedModRevision(b []byte) uint64 {
	_, mod, _ := encodedStamp(b)
	return mod
}

// encodedStamp reads an encoded instance's create_revision, mod_revision
// and health_since (the last of each, as decoding does; 0 when absent)
// without decoding the rest.
func encodedStamp(b []byte) (create, mod uint64, healthSince int64) {
	create, mod, healthSince, _ = readStamp(b)
	return create, mod, healthSince
}

// stampBytes is how many bytes of an encoded instance are the fields the
// state machine sets when it stores it (create_revision, mod_revision and
// health_since): what its encoding holds beyond its registration's.
func stampBytes(b []byte) int {
	_, _, _, n := readStamp(b)
	return n
}

// maxStampBytes is the most bytes the fields the state machine stamps on
// an instance can take: three varints of at most 10 bytes, each after its
// tag.
var maxStampBytes = protowire.SizeTag(createRevisionField) + protowire.SizeTag(modRevisionField) +
	protowire.SizeTag(healthSinceField) + 3*binary.MaxVarintLen64

// readStamp is encodedStamp, and the bytes those fields take in b.
func readStamp(b []byte) (create, mod uint64, healthSince int64, size int) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		b = b[n:]
		if typ == protowire.VarintType && (num == createRevisionField || num == modRevisionField || num == healthSinceField) {
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return
			}
			b = b[m:]
			size += n + m
			switch num {
			case createRevisionField:
				create = v
			case modRevisionField:
				mod = v
			default:
				healthSince = int64(v)
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return
		}
		b = b[n:]
	}
	return
}

// Fields instanceWithout may leave out.
var (
	tagsField     = fieldNumber((&pb.Instance{}).ProtoReflect().Descriptor(), "tags")
	metadataField = fieldNumber((&pb.Instance{}).ProtoReflect().Descriptor(), "metadata")
)

// commandRegister returns the encoded instance of the encoded command
// data's register field, nil when it has none, or has it more than once
// (decoding merges them: the bytes are not one instance's).
func commandRegister(data []byte) []byte {
	var found []byte
	for b := data; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		if num == registerField && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || found != nil {
				return nil
			}
			found, b = v, b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil
		}
		b = b[n:]
	}
	return found
}

// stampedInstance returns the stored encoding of inst made from enc, the
// encoding inst was decoded from before the state machine set what it owns
// (create_revision, mod_revision and health_since): enc's fields with
// those inserted in field order, the bytes a deterministic encoding of
// inst gives when enc was one, without encoding inst again. ok is false
// when enc is nil, already carries one of those fields, is not in field
// order or does not parse: then inst must be encoded (encodeInstance).
func stampedInstance(enc []byte, inst *pb.Instance) (stamped []byte, ok bool) {
	if enc == nil {
		return nil, false
	}
	out := make([]byte, 0, len(enc)+3*(2+binary.MaxVarintLen64))
	revs, since := false, false // inserted yet
	var last protowire.Number
	for b := enc; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 || num < last || num == createRevisionField || num == modRevisionField || num == healthSinceField {
			return nil, false
		}
		last = num
		if !revs && num > modRevisionField {
			out, revs = appendRevisions(out, inst), true
		}
		if !since && num > healthSinceField {
			out, since = appendVarintField(out, healthSinceField, uint64(inst.HealthSince)), true
		}
		out = append(out, b[:n+m]...)
		b = b[n+m:]
	}
	if !revs {
		out = appendRevisions(out, inst)
	}
	if !since {
		out = appendVarintField(out, healthSinceField, uint64(inst.HealthSince))
	}
	return out, true
}

func appendRevisions(b []byte, inst *pb.Instance) []byte {
	b = appendVarintField(b, createRevisionField, inst.CreateRevision)
	return appendVarintField(b, modRevisionField, inst.ModRevision)
}

// appendVarintField appends field num of value v, nothing for 0 (proto3
// leaves zero values out).
func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// instanceWithout decodes the stored instance without the fields skip
// (of wire type bytes), which it leaves out of the encoding before
// decoding: they cost nothing.
// buf is scratch space, returned for the next call.
func (s storedInstance) instanceWithout(buf []byte, skip ...protowire.Number) (*pb.Instance, []byte) {
	buf = buf[:0]
	for b := s.enc; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			break
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			break
		}
		// Skipped fields are strings and maps: only bytes of their
		// numbers are theirs (another wire type decodes as unknown).
		if typ != protowire.BytesType || !slices.Contains(skip, num) {
			buf = append(buf, b[:n+m]...)
		}
		b = b[n+m:]
	}
	inst := &pb.Instance{}
	_ = proto.Unmarshal(buf, inst) // see instance
	return inst, buf
}
