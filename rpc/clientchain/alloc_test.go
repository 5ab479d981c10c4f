package clientchain

import (
	"context"
	"testing"

	"google.golang.org/grpc"
)

// grpcLikeInvoker derives, cancels and waits on a context as grpc-go does
// for every call, so a call context that makes that derivation cost more
// (a goroutine or an AfterFunc to watch it) shows in the allocations.
func grpcLikeInvoker(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
	ctx, cancel := context.WithCancel(ctx)
	cancel()
	<-ctx.Done()
	return nil
}

func TestDefaultChainAllocatesOnceMorePerCallThanItsInvoker(t *testing.T) {
	unary, _ := Chain(DefaultConfig())
	ctx := context.Background()
	call := func() {
		if err := unary(ctx, "/s/M", nil, nil, nil, grpcLikeInvoker); err != nil {
			t.Fatal(err)
		}
	}
	plain := func() { _ = grpcLikeInvoker(ctx, "/s/M", nil, nil, nil) }
	for range 1000 { // per-method state and pools warm
		call()
	}
	base := testing.AllocsPerRun(10000, plain)
	got := testing.AllocsPerRun(10000, call)
	t.Logf("allocations per call: invoker alone %.2f, through the default chain %.2f", base, got)
	if got > base+1 {
		t.Errorf("a call through the default chain allocates %.2f times, its invoker alone %.2f: want at most one more (the call's context)", got, base)
	}
}
