package clientchain

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// fakeInvoker returns the scripted errors in order (nil once they run out),
// records each attempt's context, and fills any grpc.Peer option with a
// distinct address per attempt (10.0.0.<attempt>:1), as grpc-go does for an
// attempt that got a transport stream.
type fakeInvoker struct {
	mu     sync.Mutex
	errs   []error
	calls  int
	ctxs   []context.Context
	unsent bool // no attempt gets a stream: the peer stays empty
}

func script(errs ...error) *fakeInvoker { return &fakeInvoker{errs: errs} }

// unsent is script for attempts that never reach a server (no instance
// could be picked or connected to), so grpc-go reports no peer.
func unsent(errs ...error) *fakeInvoker { return &fakeInvoker{errs: errs, unsent: true} }

func (f *fakeInvoker) invoke(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.ctxs = append(f.ctxs, ctx)
	for _, o := range opts {
		if p, ok := o.(grpc.PeerCallOption); ok && !f.unsent {
			*p.PeerAddr = peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, byte(f.calls)), Port: 1}}
		}
	}
	if f.calls <= len(f.errs) {
		return f.errs[f.calls-1]
	}
	return nil
}

func (f *fakeInvoker) attempts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func unavailable() error { return status.Error(codes.Unavailable, "down") }

// alwaysUnavailable is script for 1,000 attempts that all fail Unavailable.
func alwaysUnavailable() *fakeInvoker {
	f := &fakeInvoker{errs: make([]error, 1000)}
	for i := range f.errs {
		f.errs[i] = unavailable()
	}
	return f
}

func call(t *testing.T, ic grpc.UnaryClientInterceptor, ctx context.Context, method string, inv grpc.UnaryInvoker) error {
	t.Helper()
	return ic(ctx, method, nil, nil, nil, inv)
}

// fakeClock is a settable clock for the breaker.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }
