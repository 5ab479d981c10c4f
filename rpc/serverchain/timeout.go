package serverchain

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
)

// Timeout bounds each call to d: the handler's context gets a deadline of
// now+d unless d <= 0 or the caller's own deadline is already sooner, so it
// shortens but never extends the caller's deadline. No goroutine is started;
// a handler that honours its context returns context.DeadlineExceeded, which
// grpc-go reports as codes.DeadlineExceeded.
//
// The stream form bounds the whole stream; Chain does not install it for
// streams (see Chain).
func Timeout(d time.Duration) Interceptor {
	return Interceptor{
		Unary: func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			tctx, ld := withTimeout(ctx, d)
			defer ld.release()
			return handler(tctx, req)
		},
		Stream: func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			tctx, ld := withTimeout(ss.Context(), d)
			if ld == nil {
				return handler(srv, ss)
			}
			defer ld.release()
			return handler(srv, &ctxStream{ServerStream: ss, ctx: tctx})
		},
	}
}

// withTimeout returns ctx bounded by d, or ctx itself (and a nil
// *lazyDeadline, whose release is a no-op) when no bound is needed.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, *lazyDeadline) {
	if d <= 0 {
		return ctx, nil
	}
	return withTimeoutFrom(ctx, d, time.Now())
}

// withTimeoutFrom is withTimeout for a call that started at start.
func withTimeoutFrom(ctx context.Context, d time.Duration, start time.Time) (context.Context, *lazyDeadline) {
	if d <= 0 {
		return ctx, nil
	}
	deadline := start.Add(d)
	if cur, ok := ctx.Deadline(); ok && !cur.After(deadline) {
		return ctx, nil
	}
	ld := &lazyDeadline{Context: ctx, deadline: deadline}
	return ld, ld
}

// lazyDeadline is a context with a deadline whose timer is created only when
// someone asks for Done (or Err after the deadline). Most unary handlers
// never do, so the common case costs one small allocation instead of the
// timer, closure and cancel func of context.WithDeadline. Once
// materialized, every method defers to a real context.WithDeadline child,
// so cancellation and the context package's parent lookup behave normally.
type lazyDeadline struct {
	context.Context // parent
	deadline        time.Time

	mu     sync.Mutex
	real   atomic.Pointer[context.Context]
	cancel context.CancelFunc
	done   bool // released before materializing
}

func (c *lazyDeadline) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *lazyDeadline) Done() <-chan struct{} { return c.materialize().Done() }

func (c *lazyDeadline) Err() error {
	if r := c.real.Load(); r != nil {
		return (*r).Err()
	}
	if c.Context.Err() != nil || !time.Now().Before(c.deadline) {
		return c.materialize().Err()
	}
	return nil
}

func (c *lazyDeadline) Value(key any) any {
	if r := c.real.Load(); r != nil {
		return (*r).Value(key)
	}
	return c.Context.Value(key)
}

func (c *lazyDeadline) String() string { return "serverchain.lazyDeadline" }

func (c *lazyDeadline) materialize() context.Context {
	if r := c.real.Load(); r != nil {
		return *r
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.real.Load(); r != nil {
		return *r
	}
	real, cancel := context.WithDeadline(c.Context, c.deadline)
	if c.done {
		cancel() // the call is over: behave as canceled, hold no timer
	}
	c.cancel = cancel
	c.real.Store(&real)
	return real
}

// release ends the context when the call returns, stopping any timer.
func (c *lazyDeadline) release() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = true
	if c.cancel != nil {
		c.cancel()
	}
}
