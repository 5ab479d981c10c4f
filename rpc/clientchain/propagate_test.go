package clientchain

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/zrpcio/zrpc/rpc/serverchain"
)

// Trace context and x-zrpc-* keys go on to the next service; the caller's
// ACL token (x-zrpc-token, serverchain.TokenHeader) does not: it was
// copied too, so a handler's calls acted downstream as its caller.
func TestPropagateCopiesOnlyTraceAndZrpcKeys(t *testing.T) {
	in := metadata.Pairs(
		"traceparent", "00-abc-def-01",
		"tracestate", "k=v",
		"baggage", "user=1",
		"x-zrpc-tenant", "t1",
		"x-zrpc-deadline-hint", "5",
		serverchain.TokenHeader, "the caller's secret", // for this service only
		"authorization", "secret",
		"user-agent", "grpc-go",
		"x-other", "no",
	)
	ctx := metadata.NewIncomingContext(context.Background(), in)
	// Set outgoing by the caller: must not be duplicated or overwritten.
	ctx = metadata.AppendToOutgoingContext(ctx, "x-zrpc-tenant", "caller")

	var got metadata.MD
	inv := func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		got, _ = metadata.FromOutgoingContext(ctx)
		return nil
	}
	if err := call(t, Propagate(), ctx, "/s/M", inv); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"traceparent":          {"00-abc-def-01"},
		"tracestate":           {"k=v"},
		"baggage":              {"user=1"},
		"x-zrpc-tenant":        {"caller"},
		"x-zrpc-deadline-hint": {"5"},
	}
	if len(got) != len(want) {
		t.Errorf("outgoing keys = %v, want %v", got, want)
	}
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			t.Errorf("outgoing %s = %q, want %q", k, got[k], v)
		}
	}
}

func TestPropagateWithoutIncomingLeavesContext(t *testing.T) {
	ctx := context.Background()
	inv := func(got context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		if got != ctx {
			t.Error("context replaced without incoming metadata")
		}
		return nil
	}
	if err := call(t, Propagate(), ctx, "/s/M", inv); err != nil {
		t.Fatal(err)
	}
}
