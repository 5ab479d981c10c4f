package clientchain

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultTimeout bounds each unary attempt unless configured otherwise.
const DefaultTimeout = 2 * time.Second

// Timeout returns an interceptor that bounds each call to about d, unless
// the caller's own deadline is sooner: it never extends one. d <= 0
// disables it.
//
// The bound is the client's, not the caller's: it ends the call (with
// codes.DeadlineExceeded) but is not a deadline of the call's context, so
// grpc-go sends no grpc-timeout for it and the server runs under its own
// timeout, while a caller's deadline still travels to the server as
// before. Calls that start within the same short slot of time (d/128, at
// most 10 ms) share one deadline context ending d after the slot (see
// [slotClock]), so a call costs no timer of its own: it is bounded by at
// least d and by less than d plus one slot.
func Timeout(d time.Duration) grpc.UnaryClientInterceptor {
	return TimeoutPerMethod(d, nil)
}

// TimeoutPerMethod is [Timeout] with overrides by full method name
// ("/pkg.Service/Method"); an override <= 0 means no timeout for that method.
func TimeoutPerMethod(d time.Duration, perMethod map[string]time.Duration) grpc.UnaryClientInterceptor {
	return interceptor(newTimeoutStage(d, perMethod, invokerStage{}))
}

// TimeoutStream bounds the whole life of a stream, from its start until
// RecvMsg returns an error (or the one answer of a client-streaming
// method), to d (or the per-method override). Streams are
// often long-lived (watches), so the default chain sets no stream timeout
// unless Config.StreamTimeout or a per-method override asks for one.
// Unlike the unary bound, it is a deadline of the stream's context (a
// stream is long enough that its own timer costs nothing that matters).
func TimeoutStream(d time.Duration, perMethod map[string]time.Duration) grpc.StreamClientInterceptor {
	t := newTimeoutStage(d, perMethod, nil)
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		d := t.timeout(method)
		if !shortens(ctx, d) {
			return streamer(ctx, desc, cc, method, opts...)
		}
		ctx, cancel := context.WithTimeout(ctx, d)
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			cancel()
			return nil, err
		}
		return watchEnd(cs, desc, func(error) { cancel() }), nil
	}
}

type timeoutStage struct {
	d         time.Duration
	clock     *slotClock // for d; nil when d <= 0
	perMethod map[string]methodTimeout
	next      unaryStage
}

// methodTimeout is a per-method override and the clock of its duration.
type methodTimeout struct {
	d     time.Duration
	clock *slotClock // nil when d <= 0
}

func newTimeoutStage(d time.Duration, perMethod map[string]time.Duration, next unaryStage) *timeoutStage {
	clocks := map[time.Duration]*slotClock{}
	clockFor := func(d time.Duration) *slotClock {
		if d <= 0 {
			return nil
		}
		if c, ok := clocks[d]; ok {
			return c
		}
		c := newSlotClock(d)
		clocks[d] = c
		return c
	}
	s := &timeoutStage{d: d, clock: clockFor(d), perMethod: make(map[string]methodTimeout, len(perMethod)), next: next}
	for m, md := range perMethod {
		s.perMethod[m] = methodTimeout{d: md, clock: clockFor(md)}
	}
	return s
}

func (s *timeoutStage) timeout(method string) time.Duration {
	d, _ := s.bound(method)
	return d
}

// bound returns the timeout of method and its clock.
func (s *timeoutStage) bound(method string) (time.Duration, *slotClock) {
	if len(s.perMethod) > 0 {
		if mt, ok := s.perMethod[method]; ok {
			return mt.d, mt.clock
		}
	}
	return s.d, s.clock
}

// shortens reports whether a timeout d would end before ctx's deadline.
func shortens(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return false
	}
	dl, ok := ctx.Deadline()
	return !ok || time.Until(dl) > d
}

// errClientTimeout is the cause with which a call's own cancellable
// context is ended when the client's timeout passes first.
var errClientTimeout = errors.New("clientchain: client timeout")

func (s *timeoutStage) invoke(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts []grpc.CallOption) error {
	return s.invokeNoted(ctx, nil, method, req, reply, cc, inv, opts)
}

// invokeNoted is invoke with note (if not nil) in the attempt's context
// for its picker.
func (s *timeoutStage) invokeNoted(ctx context.Context, note *PickNote, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts []grpc.CallOption) error {
	d, clock := s.bound(method)
	if !shortens(ctx, d) {
		return s.next.invoke(withNote(ctx, note), method, req, reply, cc, inv, opts)
	}
	slot := clock.slot(time.Now())
	if ctx.Done() == nil {
		// Nothing else can end the call (context.Background and its
		// values): the slot's context alone ends it.
		err := s.next.invoke(&slotBound{Context: ctx, slot: slot, note: note}, method, req, reply, cc, inv, opts)
		if err != nil && slot.Err() != nil && status.Code(err) == codes.DeadlineExceeded {
			return clientTimeoutError(d)
		}
		return err
	}
	// The caller can cancel the call too: a child of the caller's context
	// that the slot also cancels. It keeps the caller's deadline, if any,
	// which grpc-go sends as before.
	cctx, cancel := context.WithCancelCause(withNote(ctx, note))
	stop := context.AfterFunc(slot, func() { cancel(errClientTimeout) })
	err := s.next.invoke(cctx, method, req, reply, cc, inv, opts)
	stop()
	cancel(nil)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(cctx), errClientTimeout) && status.Code(err) == codes.Canceled {
		return clientTimeoutError(d)
	}
	return err
}

// clientTimeoutError is a call's error when the client's timeout d ended
// it.
func clientTimeoutError(d time.Duration) error {
	return status.Errorf(codes.DeadlineExceeded, "client timeout of %v exceeded", d)
}

// slotBound is a call's context under the client's timeout when the
// caller's context cannot be cancelled: the caller's values, with the Done
// and Err of the shared slot context and no deadline (so grpc-go sends no
// grpc-timeout for it), and the retry stage's [PickNote], if any.
//
// Value answers the context package's lookup of the nearest cancellable
// parent (an unexported key no caller's context answers here, since it has
// no Done) with the slot's, so contexts derived from this one, like the one
// grpc-go derives for each call, register with the slot directly: no
// goroutine, no timer, no AfterFunc. Should that lookup change, the context
// package uses AfterFunc instead, which costs a few allocations but behaves
// the same.
type slotBound struct {
	context.Context // the caller's; its Done is nil
	slot            context.Context
	note            *PickNote // nil: none
}

func (c *slotBound) Done() <-chan struct{} { return c.slot.Done() }

func (c *slotBound) Err() error { return c.slot.Err() }

func (c *slotBound) Value(key any) any {
	if _, ok := key.(pickNoteKey); ok && c.note != nil {
		return c.note
	}
	if v := c.Context.Value(key); v != nil {
		return v
	}
	return c.slot.Value(key)
}

// AfterFunc runs f when the slot ends, as context.AfterFunc documents.
func (c *slotBound) AfterFunc(f func()) func() bool { return context.AfterFunc(c.slot, f) }

func (c *slotBound) String() string { return "clientchain.slotBound" }
