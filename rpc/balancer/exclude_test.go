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
