package client

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/testcluster"
)

// largeMessageLimit stands in for the 64 MiB gRPC message cap: the test's
// client accepts no message larger, so a service above it can only be read
// in several messages, without writing 64 MiB through Raft first.
const largeMessageLimit = 8 << 20

// largeService is how many clienttest.LargeInstance (about 54 KB each)
// make a service of more than largeMessageLimit.
const largeService = 230

// TestGetAndWatchOfServiceLargerThanOneMessage: a service whose instances
// total more than one message is read by Get (pages) and Watch (a snapshot
// in parts) whole.
func TestGetAndWatchOfServiceLargerThanOneMessage(t *testing.T) {
	var total int
	for i := range largeService {
		total += proto.Size(clienttest.LargeInstance("big.rpc", i))
	}
	if total <= largeMessageLimit {
		t.Fatalf("the service is %d bytes, not larger than one message (%d)", total, largeMessageLimit)
	}
	cl := testcluster.New(t, 1, testcluster.WithInstanceMetadataLimit(clienttest.LargeInstanceLimit))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := clienttest.RegisterLarge(ctx, cl.Registry(0), "big.rpc", largeService); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{
		Endpoints: []string{cl.GRPCAddr(0)}, DialTimeout: time.Second, Logger: testLogger(t),
		dialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(largeMessageLimit))},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })

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
