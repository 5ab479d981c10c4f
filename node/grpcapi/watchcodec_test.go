package grpcapi

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func codecEvent(id string, rev uint64) *pb.Event {
	return &pb.Event{Type: pb.Event_PUT, Revision: rev, Instance: &pb.Instance{
		Service: "api", Id: id, Address: "127.0.0.1:9000", ModRevision: rev, Tags: []string{"a", "b"},
		Metadata: map[string]string{"region": "eu", "build": "1", "owner": "team"},
	}}
}

func kept(c watchCodec) int {
	n := 0
	c.events.bytes.Range(func(any, any) bool { n++; return true })
	return n
}

// TestWatchCodecEncodesEachEventOnce: a response of events encodes as
// protobuf would (it decodes to the same message), an event sent in two
// responses is encoded once, and snapshot pages and parts with more to
// come are encoded as usual without keeping their events.
func TestWatchCodecEncodesEachEventOnce(t *testing.T) {
	c := watchCodec{base: newWatchCodec().base, events: newEncodedEvents(2)}
	e1, e2, e3 := codecEvent("1", 5), codecEvent("2", 6), codecEvent("3", 7)
	header := &pb.ResponseHeader{Revision: 7, ServedBy: "a1"}
	roundTrip := func(r *pb.WatchResponse) {
		t.Helper()
		data, err := c.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var got pb.WatchResponse
		if err := c.Unmarshal(data, &got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, r) {
			t.Fatalf("decoded %v, want %v", &got, r)
		}
	}

	roundTrip(&pb.WatchResponse{Header: header, Events: []*pb.Event{e1, e2}})
	first, _ := c.events.bytes.Load(e1)
	roundTrip(&pb.WatchResponse{Header: header, Events: []*pb.Event{e1}})
	again, _ := c.events.bytes.Load(e1)
	if first == nil || &first.([]byte)[0] != &again.([]byte)[0] {
		t.Error("an event sent twice was encoded twice")
	}
	if n := kept(c); n != 2 {
		t.Errorf("%d events kept, want 2", n)
	}
	// The oldest is forgotten past the bound.
	roundTrip(&pb.WatchResponse{Header: header, Events: []*pb.Event{e3}})
	if _, ok := c.events.bytes.Load(e1); ok || kept(c) != 2 {
		t.Errorf("past the bound of 2: %d kept, the oldest still kept: %v", kept(c), ok)
	}

	// Snapshot pages, parts with more to come and a watch's first
	// response (naming the cluster): encoded as usual.
	c = watchCodec{base: c.base, events: newEncodedEvents(16)}
	roundTrip(&pb.WatchResponse{Header: header, Events: []*pb.Event{e3}, ClusterId: "c1"})
	roundTrip(&pb.WatchResponse{Header: header, Snapshot: true, More: true, Events: []*pb.Event{e1}})
	roundTrip(&pb.WatchResponse{Header: header, More: true, Events: []*pb.Event{e2}})
	roundTrip(&pb.WatchResponse{Header: header, Snapshot: true})
	roundTrip(&pb.WatchResponse{Header: header})
	if n := kept(c); n != 0 {
		t.Errorf("%d events kept from snapshots and parts, want none", n)
	}
	// Other messages: protobuf's own encoding.
	data, err := c.Marshal(&pb.ResponseHeader{Revision: 3})
	var h pb.ResponseHeader
	if err != nil || c.Unmarshal(data, &h) != nil || h.Revision != 3 {
		t.Errorf("a header round trip gave %v, %v", &h, err)
	}
}

// TestWatchCodecKnowsEveryWatchResponseField: the codec writes a response
// of events as its header and events; a field added to WatchResponse
// must be written by it too, or make the response one protobuf encodes
// (sharedEvents: cluster_id).
func TestWatchCodecKnowsEveryWatchResponseField(t *testing.T) {
	var names []string
	fields := (&pb.WatchResponse{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		names = append(names, string(fields.Get(i).Name()))
	}
	slices.Sort(names)
	if want := []string{"cluster_id", "events", "header", "more", "snapshot"}; !slices.Equal(names, want) {
		t.Fatalf("WatchResponse has fields %v; watchCodec.marshalEvents writes %v: teach it the new ones", names, want)
	}
	if n := fields.ByName("header").Number(); n != protoreflect.FieldNumber(watchHeaderField) {
		t.Fatalf("WatchResponse.header is field %d, the codec writes %d", n, watchHeaderField)
	}
	if n := fields.ByName("events").Number(); n != protoreflect.FieldNumber(watchEventsField) {
		t.Fatalf("WatchResponse.events is field %d, the codec writes %d", n, watchEventsField)
	}
}

// TestWatchCodecEncodesAWatchManyResponseAsProtobufDoes: a WatchMany
// response of events is written with the kept encodings of its events,
// decoding to the same message, as long as protobuf's; an end, a snapshot
// page and a progress notification go through protobuf's own encoding.
func TestWatchCodecEncodesAWatchManyResponseAsProtobufDoes(t *testing.T) {
	c := watchCodec{base: newWatchCodec().base, events: newEncodedEvents(16)}
	e1, e2 := codecEvent("1", 5), codecEvent("2", 6)
	header := &pb.ResponseHeader{Revision: 6, ServedBy: "a1"}
	for _, r := range []*pb.WatchManyResponse{
		{WatchId: 7, Response: &pb.WatchResponse{Header: header, Events: []*pb.Event{e1, e2}}},
		{WatchId: 1 << 40, Response: &pb.WatchResponse{Header: header, Events: []*pb.Event{e2}}},
		{WatchId: 3, Response: &pb.WatchResponse{Header: header, Snapshot: true, Events: []*pb.Event{e1}}},
		{WatchId: 4, Ended: &pb.ErrorDetail{Code: 7, Message: "no", Reason: "PERMISSION_DENIED"}},
		{ProgressNotifyMs: 2500, Response: &pb.WatchResponse{Header: header}},
		{WatchId: 5, ProgressNotifyMs: 100, Response: &pb.WatchResponse{Header: header, Events: []*pb.Event{e1}}},
	} {
		data, err := c.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var got pb.WatchManyResponse
		if err := proto.Unmarshal(data.Materialize(), &got); err != nil || !proto.Equal(&got, r) {
			t.Errorf("watch %d: decoded %v (%v), want %v", r.WatchId, &got, err, r)
		}
		if data.Len() != proto.Size(r) {
			t.Errorf("watch %d: codec wrote %d bytes, protobuf writes %d", r.WatchId, data.Len(), proto.Size(r))
		}
	}
	if n := kept(c); n != 2 {
		t.Errorf("%d events kept, want the 2 sent as events", n)
	}
	fields := (&pb.WatchManyResponse{}).ProtoReflect().Descriptor().Fields()
	// progress_notify_ms: a response that carries it goes through
	// protobuf's own encoding.
	if fields.Len() != 4 || fields.ByName("progress_notify_ms") == nil || fields.ByName("watch_id").Number() != protoreflect.FieldNumber(watchManyIDField) ||
		fields.ByName("response").Number() != protoreflect.FieldNumber(watchManyResponseField) {
		t.Fatalf("WatchManyResponse's fields changed; teach watchCodec.marshalEvents the new ones")
	}
}
