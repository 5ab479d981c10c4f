package serverchain

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

func TestTimeoutDeadline(t *testing.T) {
	tests := []struct {
		name       string
		d          time.Duration
		caller     time.Duration // 0: no caller deadline
		wantCaller bool          // the handler sees the caller's deadline
		wantNone   bool          // the handler sees no deadline
	}{
		{"no caller deadline", time.Second, 0, false, false},
		{"caller deadline later is shortened", time.Second, time.Hour, false, false},
		{"caller deadline sooner is kept", time.Hour, time.Second, true, false},
		{"zero timeout leaves no deadline", 0, 0, false, true},
		{"zero timeout keeps caller deadline", 0, time.Second, true, false},
	}
	for _, tt := range tests {
		for _, kind := range []string{"unary", "stream"} {
			t.Run(tt.name+"/"+kind, func(t *testing.T) {
				ctx := context.Background()
				var callerDL time.Time
				if tt.caller > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.caller)
					defer cancel()
					callerDL, _ = ctx.Deadline()
				}
				before := time.Now()
				var got time.Time
				var ok bool
				ic := Timeout(tt.d)
				if kind == "unary" {
					_, _ = ic.Unary(ctx, nil, unaryInfo("/svc/M"), func(ctx context.Context, _ any) (any, error) {
						got, ok = ctx.Deadline()
						return nil, nil
					})
				} else {
					_ = ic.Stream(nil, &fakeStream{ctx: ctx}, streamInfo("/svc/M"), func(_ any, ss grpc.ServerStream) error {
						got, ok = ss.Context().Deadline()
						return nil
					})
				}
				after := time.Now()
				switch {
				case tt.wantNone:
					if ok {
						t.Fatalf("deadline %v set, want none", got)
					}
				case tt.wantCaller:
					if !ok || !got.Equal(callerDL) {
						t.Fatalf("deadline %v, want caller's %v", got, callerDL)
					}
				default:
					if !ok || got.Before(before.Add(tt.d)) || got.After(after.Add(tt.d)) {
						t.Fatalf("deadline %v not now+%v", got, tt.d)
					}
					if tt.caller > 0 && !got.Before(callerDL) {
						t.Fatalf("deadline %v not shorter than caller's %v", got, callerDL)
					}
				}
			})
		}
	}
}

// waitDone fails the test if ctx is not done within a generous bound; it
// asserts an outcome, not a duration.
func waitDone(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("context never done")
	}
}

func TestLazyDeadlineFires(t *testing.T) {
	ctx, ld := withTimeout(context.Background(), time.Millisecond)
	defer ld.release()
	waitDone(t, ctx)
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err = %v", ctx.Err())
	}
	// A child made after the fact is done at once.
	child, cancel := context.WithCancel(ctx)
	defer cancel()
	waitDone(t, child)
}

func TestLazyDeadlineErrWithoutDone(t *testing.T) {
	ctx, ld := withTimeout(context.Background(), time.Millisecond)
	defer ld.release()
	giveUp := time.Now().Add(10 * time.Second)
	for ctx.Err() == nil { // polls Err only: it must turn non-nil by itself
		if time.Now().After(giveUp) {
			t.Fatal("Err never reported the deadline")
		}
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err = %v", ctx.Err())
	}
	waitDone(t, ctx) // and Done agrees
}

func TestLazyDeadlineParentCancel(t *testing.T) {
	parent, cancelParent := context.WithCancel(context.Background())
	ctx, ld := withTimeout(parent, time.Hour)
	defer ld.release()
	child, cancelChild := context.WithCancel(ctx)
	defer cancelChild()
	if ctx.Err() != nil {
		t.Fatal("done before anything happened")
	}
	cancelParent()
	waitDone(t, ctx)
	waitDone(t, child)
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("Err = %v", ctx.Err())
	}
}

func TestLazyDeadlineReleased(t *testing.T) {
	type key struct{}
	parent := context.WithValue(context.Background(), key{}, "v")
	ctx, ld := withTimeout(parent, time.Hour)
	if ctx.Value(key{}) != "v" {
		t.Fatal("value lost before materializing")
	}
	ld.release()
	waitDone(t, ctx) // materialized after release: already canceled
	if ctx.Value(key{}) != "v" {
		t.Fatal("value lost after materializing")
	}
}

// A call whose request carries no deadline is bounded by the server's
// timeout through the lazy deadline alone: no timer, no cancel func, one
// allocation for the whole default chain (context.WithDeadline would make
// three and start a timer).
func TestChainCallWithoutDeadlineCreatesNoTimer(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Registerer = prometheus.NewRegistry()
	unary, _ := Chain(cfg)
	info := unaryInfo("/svc/M")
	var seen context.Context
	handler := func(ctx context.Context, _ any) (any, error) {
		seen = ctx
		return nil, nil
	}
	call := func() {
		if _, err := unary(context.Background(), nil, info, handler); err != nil {
			t.Fatal(err)
		}
	}
	call() // per-method metrics made
	if _, ok := seen.Deadline(); !ok {
		t.Fatal("the handler of a call without a deadline saw none: the server's timeout does not bound it")
	}
	ld, ok := seen.(*lazyDeadline)
	if !ok {
		t.Fatalf("the handler's context is a %T, want the chain's lazy deadline", seen)
	}
	if ld.real.Load() != nil {
		t.Fatal("the chain made the deadline's timer though the handler never asked for Done")
	}
	if got := testing.AllocsPerRun(1000, call); got > 1 {
		t.Fatalf("a call through the default server chain allocates %.1f times, want at most 1 (its lazy deadline)", got)
	}
}
