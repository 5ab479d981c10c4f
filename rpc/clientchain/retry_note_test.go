package clientchain

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
)

// notingInvoker stands in for grpc-go with a balancer that notes its picks
// as rpc/balancer's p2c does: attempt n goes to 10.0.0.<n>:1, which it
// records in the context's PickNote, and ends noting whether it sent
// anything (sent, per attempt; true past its end). It fills a peer option
// as grpc-go does for an attempt that sent something, and records each
// attempt's options and context. With quiet it notes nothing, as a
// balancer of grpc-go's own.
type notingInvoker struct {
	mu    sync.Mutex
	errs  []error
	sent  []bool
	quiet bool
	opts  [][]grpc.CallOption
	ctxs  []context.Context
}

func (f *notingInvoker) invoke(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, opts ...grpc.CallOption) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.opts)
	f.opts = append(f.opts, slices.Clone(opts))
	f.ctxs = append(f.ctxs, ctx)
	addr := fmt.Sprintf("10.0.0.%d:1", n+1)
	sent := n >= len(f.sent) || f.sent[n]
	if note := PickNoteFrom(ctx); note != nil && !f.quiet {
		note.Record(&addr)
		defer note.Finish(sent)
	}
	for _, o := range opts {
		if p, ok := o.(grpc.PeerCallOption); ok && sent {
			*p.PeerAddr = peer.Peer{Addr: textAddr(addr)}
		}
	}
	if n < len(f.errs) {
		return f.errs[n]
	}
	return nil
}

// script sets the outcomes of the next attempts: their errors and whether
// each sent anything.
func (f *notingInvoker) script(errs []error, sent []bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.opts)
	f.errs = append(make([]error, n), errs...)
	f.sent = append(make([]bool, n), sent...)
	for i := range n {
		f.sent[i] = true
	}
}

func (f *notingInvoker) attempts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.opts)
}

// lastOptions returns the options of the latest attempt.
func (f *notingInvoker) lastOptions() []grpc.CallOption {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opts[len(f.opts)-1]
}

func hasPeerOption(opts []grpc.CallOption) bool {
	for _, o := range opts {
		if _, ok := o.(grpc.PeerCallOption); ok {
			return true
		}
	}
	return false
}

// idleConn is a ClientConn that is never connected: the chain sees which
// connection a call is made on, the invoker makes the call.
func idleConn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///unused", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func noteTestChain() grpc.UnaryClientInterceptor {
	cfg := DefaultConfig()
	cfg.NoBreaker = true
	cfg.Retry.Rand = func() float64 { return 0 }
	unary, _ := Chain(cfg)
	return unary
}

func TestRetryChainAddsNoCallOptionWhenTheBalancerNotesThePick(t *testing.T) {
	unary, cc, inv := noteTestChain(), idleConn(t), &notingInvoker{}
	for i := range 3 {
		if err := unary(context.Background(), "/s/M", nil, nil, cc, inv.invoke); err != nil {
			t.Fatal(err)
		}
		if got := inv.lastOptions(); i > 0 && len(got) > 0 {
			t.Fatalf("call %d through the default chain, on a connection whose balancer noted its picks, carried %d call options, want none", i+1, len(got))
		}
	}
	other := idleConn(t)
	if err := unary(context.Background(), "/s/M", nil, nil, other, inv.invoke); err != nil {
		t.Fatal(err)
	}
	if !hasPeerOption(inv.lastOptions()) {
		t.Fatal("the first call on another connection carried no peer option: the chain must learn each connection's balancer")
	}
}

func TestRetryChainKeepsThePeerOptionWhenTheBalancerNotesNothing(t *testing.T) {
	unary, cc, inv := noteTestChain(), idleConn(t), &notingInvoker{quiet: true}
	for i := range 3 {
		if err := unary(context.Background(), "/s/M", nil, nil, cc, inv.invoke); err != nil {
			t.Fatal(err)
		}
		if !hasPeerOption(inv.lastOptions()) {
			t.Fatalf("call %d carried no peer option, though the balancer notes no pick: a failed attempt's instance would be unknown", i+1)
		}
	}
}

// Once the chain relies on the balancer's note, a failed attempt that sent
// something is still not resent unless idempotent, and one that sent
// nothing is resent to another instance.
func TestRetryLearnsFromThePickNoteWhetherAFailedAttemptReachedItsInstance(t *testing.T) {
	unary, cc, inv := noteTestChain(), idleConn(t), &notingInvoker{}
	if err := unary(context.Background(), "/s/M", nil, nil, cc, inv.invoke); err != nil {
		t.Fatal(err) // the connection's balancer is seen to note its picks
	}

	inv.script([]error{unavailable()}, []bool{true})
	before := inv.attempts()
	if err := unary(context.Background(), "/s/M", nil, nil, cc, inv.invoke); err == nil {
		t.Fatal("a non-idempotent call whose attempt reached its instance and failed succeeded: it was resent")
	}
	if got := inv.attempts() - before; got != 1 {
		t.Fatalf("a non-idempotent call whose attempt reached its instance made %d attempts, want 1", got)
	}
	if hasPeerOption(inv.lastOptions()) {
		t.Fatal("the attempt carried a peer option on a connection whose balancer notes its picks")
	}

	inv.script([]error{unavailable()}, []bool{false})
	before = inv.attempts()
	if err := unary(context.Background(), "/s/M", nil, nil, cc, inv.invoke); err != nil {
		t.Fatalf("a call whose first attempt sent nothing: %v, want success on the retry", err)
	}
	if got := inv.attempts() - before; got != 2 {
		t.Fatalf("a call whose first attempt sent nothing made %d attempts, want 2", got)
	}
	first := fmt.Sprintf("10.0.0.%d:1", before+1)
	if ex := ExcludedFrom(inv.ctxs[before+1]); !slices.Contains(ex, first) {
		t.Fatalf("the retry excludes %v, want the first attempt's instance %s", ex, first)
	}
}
