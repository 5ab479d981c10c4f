package raftstore

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// hotEvents is how many of the ring's newest events keep their event
// whole: the events watchers that keep up read, one object shared by all
// of them (the agent's gRPC codec keeps the encoding of as many,
// node/grpcapi's maxEncodedEvents). Older events keep only what rebuilds
// them, a tenth of the memory, and are rebuilt for each watcher that
// reads that far back.
const hotEvents = 8192

// ringEvent is one event of the watch ring. Its instance's encoding is
// the FSM's stored one (storedInstance.enc), shared with the registry
// while the instance stays as the event left it.
type ringEvent struct {
	ev       *pb.Event // nil once cool
	typ      pb.Event_Type
	revision uint64
	service  string
	enc      []byte // the instance, encoded
	size     int    // the event's encoded size
}

// newRingEvent returns the event of typ for inst, whose encoding enc
// is, at rev.
func newRingEvent(typ pb.Event_Type, inst *pb.Instance, enc []byte, rev uint64) *ringEvent {
	ev := &pb.Event{Type: typ, Instance: inst, Revision: rev}
	return &ringEvent{ev: ev, typ: typ, revision: rev, service: inst.Service, enc: enc, size: encodedEventSize(typ, len(enc), rev)}
}

// Field numbers of pb.Event besides eventInstanceField.
var (
	eventTypeField     = fieldNumber((&pb.Event{}).ProtoReflect().Descriptor(), "type")
	eventRevisionField = fieldNumber((&pb.Event{}).ProtoReflect().Descriptor(), "revision")
)

// encodedEventSize is the proto.Size of an event of typ at rev whose
// instance encodes to instBytes bytes (a stored instance's encoding is
// as long as its proto.Size), counted without sizing the instance again:
// every replica makes an event of every write, most with no watcher to
// size it (the gRPC layer sizes events as it sends them, and caches it).
func encodedEventSize(typ pb.Event_Type, instBytes int, rev uint64) int {
	n := protowire.SizeTag(eventInstanceField) + protowire.SizeBytes(instBytes)
	if typ != 0 {
		n += protowire.SizeTag(eventTypeField) + protowire.SizeVarint(uint64(typ))
	}
	if rev != 0 {
		n += protowire.SizeTag(eventRevisionField) + protowire.SizeVarint(rev)
	}
	return n
}

// cool lets the event go, keeping what rebuilds it. The caller holds the
// ring's write lock.
func (r *ringEvent) cool() { r.ev = nil }

// event returns the event: the one made with it while it is hot, else a
// new one rebuilt from the encoding (never changed afterwards either).
// The caller holds the ring's lock.
func (r *ringEvent) event() *pb.Event {
	if r.ev != nil {
		return r.ev
	}
	inst := &pb.Instance{}
	_ = proto.Unmarshal(r.enc, inst) // encoded by the FSM: see storedInstance.instance
	return &pb.Event{Type: r.typ, Instance: inst, Revision: r.revision}
}
