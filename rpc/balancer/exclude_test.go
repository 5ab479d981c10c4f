package balancer

import (
	"context"
	"testing"

	"google.golang.org/grpc/balancer"

	"github.com/zrpcio/zrpc/rpc/clientchain"
)

// A retried call never goes back to an instance that already failed it.
func TestP2CAvoidsExcludedInstances(t *testing.T) {
	scs := newSubConns(3)
	p := newP2CPickerBuilder().Build(buildInfo(scs))
	ctx := clientchain.WithExcluded(context.Background(), scs[0].addr)
	ctx = clientchain.WithExcluded(ctx, scs[1].addr)
	for i := 0; i < 200; i++ {
		res := pick(t, p, ctx)
		if res.SubConn != scs[2] {
			t.Fatalf("pick %d went to %v, an excluded instance", i, res.SubConn)
		}
		res.Done(balancer.DoneInfo{})
	}
	// With every instance excluded the call still goes somewhere.
	all := clientchain.WithExcluded(ctx, scs[2].addr)
	res := pick(t, p, all)
	res.Done(balancer.DoneInfo{})
}

// The picker notes the instance it picked where a stage asked for it, so
// that a hedge can be sent elsewhere while the first attempt runs.
func TestP2CRecordsPickInNote(t *testing.T) {
	scs := newSubConns(3)
	p := newP2CPickerBuilder().Build(buildInfo(scs))
	var note clientchain.PickNote
	ctx := clientchain.WithPickNote(context.Background(), &note)
	for range 20 {
		res := pick(t, p, ctx)
		if got, want := note.Addr(), res.SubConn.(*fakeSubConn).addr; got != want {
			t.Fatalf("note says %q, picked %q", got, want)
		}
		res.Done(balancer.DoneInfo{})
	}
}
