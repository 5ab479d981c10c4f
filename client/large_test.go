package client

import (
	"context"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/testcluster"
)

// largeService is how many clienttest.LargeInstance make a service of more
// than 64 MiB, the gRPC message cap.
const largeService = 1300

// TestGetAndWatchOfServiceLargerThanOneMessage: a service whose instances
// total more than 64 MiB is read by Get (pages) and Watch (a snapshot in
// parts) whole.
func TestGetAndWatchOfServiceLargerThanOneMessage(t *testing.T) {
	cl := testcluster.New(t, 1, testcluster.WithInstanceMetadataLimit(clienttest.LargeInstanceLimit))
	// Writing 70 MB through Raft takes a while under -race on a busy machine.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := clienttest.RegisterLarge(ctx, cl.Registry(0), "big.rpc", largeService); err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, cl.GRPCAddr(0))

	insts, rev, err := c.Get(ctx, "big.rpc")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	checkLarge(t, "Get", insts)

	w, err := c.Watch(ctx, "big.rpc", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	resp, err := w.Recv()
	if err != nil {
		t.Fatalf("Watch Recv: %v", err)
	}
	if !resp.Snapshot || resp.More || resp.Header.Revision != rev {
		t.Fatalf("first watch response: snapshot %v, more %v, revision %d; want a whole snapshot at %d",
			resp.Snapshot, resp.More, resp.Header.Revision, rev)
	}
	var got []*zrpcpb.Instance
	for _, ev := range resp.Events {
		got = append(got, ev.Instance)
	}
	checkLarge(t, "Watch snapshot", got)
}

func checkLarge(t *testing.T, what string, insts []*zrpcpb.Instance) {
	t.Helper()
	if len(insts) != largeService {
		t.Fatalf("%s returned %d instances, want %d", what, len(insts), largeService)
	}
	for i, inst := range insts {
		if want := clienttest.LargeInstance("big.rpc", i); inst.Id != want.Id || len(inst.Metadata) != len(want.Metadata) {
			t.Fatalf("%s instance %d = %s with %d metadata keys, want %s with %d", what, i, inst.Id, len(inst.Metadata), want.Id, len(want.Metadata))
		}
	}
}
