package node

import (
	"testing"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func TestWatchOverGRPCSnapshotThenEventsThenResume(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, c := dial(t, n.GRPCAddr())
	ctx := ctxT(t)
	if _, err := c.Register(ctx, &pb.RegisterRequest{Instance: inst("w.rpc", "a", "127.0.0.1:9001")}); err != nil {
		t.Fatal(err)
	}
	stream, err := c.Watch(ctx, &pb.WatchRequest{Service: "w.rpc"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !first.Snapshot || len(first.Events) != 1 || first.Events[0].Instance.Id != "a" || first.Header.ServedBy != "n1" {
		t.Fatalf("first watch response = %v, want a snapshot with a", first)
	}
	// Changes to another service are not delivered; ours are, in order.
	c.Register(ctx, &pb.RegisterRequest{Instance: inst("other.rpc", "x", "127.0.0.1:9009")})
	r, _ := c.Register(ctx, &pb.RegisterRequest{Instance: inst("w.rpc", "b", "127.0.0.1:9002")})
	d, _ := c.Deregister(ctx, &pb.DeregisterRequest{Service: "w.rpc", Id: "a"})
	var got []*pb.Event
	for len(got) < 2 {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, resp.Events...)
	}
	if got[0].Type != pb.Event_PUT || got[0].Instance.Id != "b" || got[0].Revision != r.Header.Revision ||
		got[1].Type != pb.Event_DELETE || got[1].Instance.Id != "a" || got[1].Revision != d.Header.Revision {
		t.Fatalf("events = %v, want PUT b @%d, DELETE a @%d", got, r.Header.Revision, d.Header.Revision)
	}

	// Resuming from the snapshot's revision replays exactly those events.
	resumed, err := c.Watch(ctx, &pb.WatchRequest{Service: "w.rpc", FromRevision: first.Header.Revision})
	if err != nil {
		t.Fatal(err)
	}
	var again []*pb.Event
	for len(again) < 2 {
		resp, err := resumed.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Snapshot {
			t.Fatalf("resume from a retained revision sent a snapshot")
		}
		again = append(again, resp.Events...)
	}
	for i := range got {
		if again[i].Revision != got[i].Revision || again[i].Type != got[i].Type {
			t.Fatalf("resumed event %d = %v, want %v", i, again[i], got[i])
		}
	}
}
