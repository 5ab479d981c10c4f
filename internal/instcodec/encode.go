// Package instcodec encodes and decodes a registration's instance, and the
// messages that carry one (a Raft entry's Command, a RegisterRequest, a
// RegisterResponse), without protobuf's reflection over the instance's
// metadata map: ranging over it, copying and sorting its keys to encode,
// a value and an interface for every key and value to decode, which cost
// more than the rest of an instance. The agent (raftstore's log entries,
// the codecs of node and node/grpcapi) and package client use it, so that
// a registration passes every step of its way, client included, the
// same way.
//
// It is not a format: encoding gives the bytes of protobuf's deterministic
// encoding, decoding gives proto.Unmarshal's result. Encoding only reads
// the message it is given: other goroutines may read it meanwhile.
package instcodec

import (
	"fmt"
	"slices"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

var (
	// deterministic is how instances are encoded: with their metadata in
	// key order, so that equal instances are equal bytes (raftstore stores
	// a registration as its entry encodes it).
	deterministic = proto.MarshalOptions{Deterministic: true}
	// cachedSize encodes a message deterministic.Size has just sized.
	cachedSize = proto.MarshalOptions{Deterministic: true, UseCachedSize: true}
)

// Field numbers of Command.register and Instance.metadata.
var (
	registerField = fieldNumber(&pb.Command{}, "register")
	metadataField = fieldNumber(&pb.Instance{}, "metadata")
)

// Field numbers of a map entry: its key and its value.
const (
	mapKeyField   protowire.Number = 1
	mapValueField protowire.Number = 2
)

func fieldNumber(m proto.Message, name protoreflect.Name) protowire.Number {
	return m.ProtoReflect().Descriptor().Fields().ByName(name).Number()
}

// EncodeCommand returns cmd's deterministic encoding: the bytes
// proto.MarshalOptions{Deterministic: true} gives. A registration, the
// write every client makes, is encoded without protobuf's reflection
// over the metadata map (see AppendInstanceField); a command with fields
// this agent does not know is encoded by protobuf alone. cmd is only
// read.
func EncodeCommand(cmd *pb.Command) ([]byte, error) {
	reg, ok := cmd.Kind.(*pb.Command_Register)
	if !ok || !byHand(reg.Register) || len(cmd.ProtoReflect().GetUnknown()) > 0 {
		return deterministic.Marshal(cmd)
	}
	e, err := newInstanceEncoding(reg.Register)
	if err != nil {
		return nil, err
	}
	defer e.free()
	head := commandHeads.Get().(*pb.Command)
	defer func() {
		*head = pb.Command{}
		commandHeads.Put(head)
	}()
	// Every field of cmd but its kind, which protobuf writes after them.
	*head = pb.Command{RequestId: cmd.RequestId, Time: cmd.Time, Quota: cmd.Quota, ClockStep: cmd.ClockStep}
	n := deterministic.Size(head)
	b, err := cachedSize.MarshalAppend(make([]byte, 0, n+e.fieldSize(registerField)), head)
	if err != nil {
		return nil, err
	}
	return e.appendField(b, registerField)
}

// commandHeads are Commands that EncodeCommand fills with a command's
// fields other than its kind.
var commandHeads = sync.Pool{New: func() any { return new(pb.Command) }}

// byHand reports whether inst's encoding is written here: it has
// metadata, and no fields this agent does not know.
func byHand(inst *pb.Instance) bool {
	return inst != nil && len(inst.Metadata) > 0 && len(inst.ProtoReflect().GetUnknown()) == 0
}

// AppendInstanceField appends inst to b as the field num of a message:
// its tag, its length and its deterministic encoding. The instance's
// fields other than its metadata are encoded by protobuf from copies of
// them, and the map's entries, sorted by key, are put in at the
// metadata's place in field order: protobuf's reflection over a map
// costs more than the rest of an instance. An instance with fields this
// agent does not know is encoded by protobuf alone. inst is only read.
func AppendInstanceField(b []byte, num protowire.Number, inst *pb.Instance) ([]byte, error) {
	if !byHand(inst) {
		enc, err := deterministic.Marshal(inst)
		if err != nil {
			return nil, err
		}
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendBytes(b, enc), nil
	}
	e, err := newInstanceEncoding(inst)
	if err != nil {
		return nil, err
	}
	defer e.free()
	return e.appendField(b, num)
}

// AppendMessage appends to b the deterministic encoding of a message
// whose fields are head's and, as its field num, inst (head's own field
// num is left out): head's fields by protobuf, inst by
// AppendInstanceField, in field order. num must not be in a oneof.
// Callers build head from their message's other fields; neither it nor
// inst is written to.
func AppendMessage(b []byte, head proto.Message, num protowire.Number, inst *pb.Instance) ([]byte, error) {
	if inst == nil {
		return deterministic.MarshalAppend(b, head)
	}
	var e *instanceEncoding
	var enc []byte // inst's encoding, when protobuf makes it
	var size int
	if byHand(inst) {
		var err error
		if e, err = newInstanceEncoding(inst); err != nil {
			return nil, err
		}
		defer e.free()
		size = e.fieldSize(num)
	} else {
		var err error
		if enc, err = deterministic.Marshal(inst); err != nil {
			return nil, err
		}
		size = protowire.SizeTag(num) + protowire.SizeBytes(len(enc))
	}
	b = slices.Grow(b, deterministic.Size(head)+size)
	start := len(b)
	b, err := cachedSize.MarshalAppend(b, head)
	if err != nil {
		return nil, err
	}
	at, mid := start+fieldsBefore(b[start:], num), len(b)
	if e != nil {
		if b, err = e.appendField(b, num); err != nil {
			return nil, err
		}
	} else {
		b = protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), enc)
	}
	// The instance goes before head's fields numbered above it.
	rotateLeft(b[at:], mid-at)
	return b, nil
}

// rotateLeft moves s[k:] before s[:k], in place.
func rotateLeft(s []byte, k int) {
	slices.Reverse(s[:k])
	slices.Reverse(s[k:])
	slices.Reverse(s)
}

// fieldsBefore returns the length of the leading fields of enc, an
// encoding in field order, whose numbers are below num.
func fieldsBefore(enc []byte, num protowire.Number) int {
	for at := 0; at < len(enc); {
		n, typ, m := protowire.ConsumeTag(enc[at:])
		if m < 0 || n >= num {
			return at
		}
		l := protowire.ConsumeFieldValue(n, typ, enc[at+m:])
		if l < 0 {
			return at
		}
		at += m + l
	}
	return len(enc)
}

// instanceEncoding is an instance with metadata being encoded: copies of
// its fields numbered below and above the metadata's, which protobuf
// encodes, and its metadata keys in order, whose entries are written
// here. The copies share the instance's values (its tags, its check),
// which are only read.
type instanceEncoding struct {
	below, above pb.Instance
	md           map[string]string
	keys         []string
	size         int // of the instance's encoding
}

var instanceEncodings = sync.Pool{New: func() any { return new(instanceEncoding) }}

// newInstanceEncoding returns inst's encoding, to append and then free.
// The copies name every field of an Instance but its metadata: a field
// added to Instance must be added here
// (TestEncodingCopiesEveryFieldOfAnInstance fails until it is).
func newInstanceEncoding(inst *pb.Instance) (*instanceEncoding, error) {
	e := instanceEncodings.Get().(*instanceEncoding)
	e.below = pb.Instance{
		Id: inst.Id, Service: inst.Service, Node: inst.Node, Address: inst.Address,
		Weight: inst.Weight, Zone: inst.Zone, Version: inst.Version, Tags: inst.Tags,
	}
	e.above = pb.Instance{
		Health: inst.Health, Check: inst.Check, Session: inst.Session,
		CreateRevision: inst.CreateRevision, ModRevision: inst.ModRevision,
		HealthOutput: inst.HealthOutput, HealthSince: inst.HealthSince,
	}
	e.md = inst.Metadata
	entries := 0
	for k, v := range e.md {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			e.free()
			return nil, fmt.Errorf("metadata %q: string field contains invalid UTF-8", k)
		}
		e.keys = append(e.keys, k)
		entries += metadataEntrySize(k, v)
	}
	slices.Sort(e.keys)
	e.size = deterministic.Size(&e.below) + entries + deterministic.Size(&e.above)
	return e, nil
}

// free returns e to the pool without the instance's values.
func (e *instanceEncoding) free() {
	e.below, e.above, e.md = pb.Instance{}, pb.Instance{}, nil
	clear(e.keys)
	e.keys = e.keys[:0]
	if cap(e.keys) > 256 { // an instance with many entries: let its keys go
		e.keys = nil
	}
	instanceEncodings.Put(e)
}

// fieldSize is the encoded size of the instance as the field num of a
// message, tag and length included.
func (e *instanceEncoding) fieldSize(num protowire.Number) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(e.size)
}

// appendField appends the instance as the field num: the fields below
// the metadata's, the entries, the fields above.
func (e *instanceEncoding) appendField(b []byte, num protowire.Number) ([]byte, error) {
	b = slices.Grow(b, e.fieldSize(num))
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(e.size))
	start := len(b)
	b, err := cachedSize.MarshalAppend(b, &e.below)
	if err != nil {
		return nil, err
	}
	for _, k := range e.keys {
		b = appendMetadataEntry(b, k, e.md[k])
	}
	if b, err = cachedSize.MarshalAppend(b, &e.above); err != nil {
		return nil, err
	}
	if n := len(b) - start; n != e.size {
		return nil, fmt.Errorf("instance %s/%s was %d bytes, then %d: changed while it was encoded", e.below.Service, e.below.Id, e.size, n)
	}
	return b, nil
}

// metadataEntrySize is the encoded size of the metadata entry k: v in an
// instance, its tag included. protobuf writes both the key and the value
// of a map entry, empty or not.
func metadataEntrySize(k, v string) int {
	n := metadataEntryBodySize(k, v)
	return protowire.SizeTag(metadataField) + protowire.SizeBytes(n)
}

func metadataEntryBodySize(k, v string) int {
	return protowire.SizeTag(mapKeyField) + protowire.SizeBytes(len(k)) +
		protowire.SizeTag(mapValueField) + protowire.SizeBytes(len(v))
}

// appendMetadataEntry appends the metadata entry k: v as protobuf
// encodes a map entry of an instance.
func appendMetadataEntry(b []byte, k, v string) []byte {
	b = protowire.AppendTag(b, metadataField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(metadataEntryBodySize(k, v)))
	b = protowire.AppendTag(b, mapKeyField, protowire.BytesType)
	b = protowire.AppendString(b, k)
	b = protowire.AppendTag(b, mapValueField, protowire.BytesType)
	return protowire.AppendString(b, v)
}
