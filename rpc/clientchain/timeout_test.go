package clientchain

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/internal/monotime"
)

// ctxOf returns the context the invoker gets when ic is called with ctx.
func ctxOf(t *testing.T, ic grpc.UnaryClientInterceptor, ctx context.Context, method string) context.Context {
	t.Helper()
	var got context.Context
	inv := func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		got = ctx
		return nil
	}
	if err := call(t, ic, ctx, method, inv); err != nil {
		t.Fatal(err)
	}
	return got
}

// deadlineServer serves the echo method; each call reports the deadline
// its context had (zero for none) on the returned channel, then answers
// at once, or, with hang, only when its context ends.
func deadlineServer(t *testing.T, hang bool) (string, <-chan time.Time) {
	t.Helper()
	seen := make(chan time.Time, 16)
	addr := grpctest.Serve(t, func(s *grpc.Server) {
		grpctest.RegisterEcho(s, func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
			dl, _ := ctx.Deadline()
			seen <- dl
			if hang {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return in, nil
		})
	})
	return addr, seen
}

// dialTimeout connects to addr through a Timeout(d) interceptor.
func dialTimeout(t *testing.T, addr string, d time.Duration) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(Timeout(d)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func echoCall(ctx context.Context, conn *grpc.ClientConn) error {
	return conn.Invoke(ctx, grpctest.EchoMethod, wrapperspb.Bytes([]byte("x")), new(wrapperspb.BytesValue))
}

// callerContexts are the two kinds of caller context the timeout handles
// differently: one nothing can cancel, and one the caller can cancel.
func callerContexts(t *testing.T) map[string]context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return map[string]context.Context{"background": context.Background(), "cancellable": ctx}
}

func TestTimeoutEndsCallThatNeverAnswersWithDeadlineExceeded(t *testing.T) {
	addr, _ := deadlineServer(t, true)
	conn := dialTimeout(t, addr, 200*time.Millisecond)
	for name, ctx := range callerContexts(t) {
		t.Run(name, func(t *testing.T) {
			err := echoCall(ctx, conn)
			if status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("call to a handler that never answers: %v, want DeadlineExceeded", err)
			}
		})
	}
}

// The error says the client's timeout ended the call, whatever the
// caller's context: "context deadline exceeded" would point at a deadline
// the caller never set.
func TestTimeoutErrorNamesTheClientTimeout(t *testing.T) {
	addr, _ := deadlineServer(t, true)
	conn := dialTimeout(t, addr, 200*time.Millisecond)
	for name, ctx := range callerContexts(t) {
		t.Run(name, func(t *testing.T) {
			err := echoCall(ctx, conn)
			if want := "client timeout of 200ms exceeded"; status.Code(err) != codes.DeadlineExceeded || status.Convert(err).Message() != want {
				t.Fatalf("call to a handler that never answers: %v, want DeadlineExceeded %q", err, want)
			}
		})
	}
}

func TestTimeoutDefaultIsNotSentToServer(t *testing.T) {
	addr, seen := deadlineServer(t, false)
	conn := dialTimeout(t, addr, 2*time.Second)
	for name, ctx := range callerContexts(t) {
		t.Run(name, func(t *testing.T) {
			if err := echoCall(ctx, conn); err != nil {
				t.Fatal(err)
			}
			if dl := <-seen; !dl.IsZero() {
				t.Fatalf("server saw deadline %v (a grpc-timeout), want none for the client's default timeout", dl)
			}
		})
	}
}

func TestTimeoutCallerDeadlineReachesServer(t *testing.T) {
	addr, seen := deadlineServer(t, false)
	conn := dialTimeout(t, addr, 2*time.Second)
	for _, d := range []time.Duration{time.Second, 7 * time.Second} { // shorter and longer than the timeout
		t.Run(d.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			want, _ := ctx.Deadline()
			if err := echoCall(ctx, conn); err != nil {
				t.Fatal(err)
			}
			// grpc-timeout carries the remaining time, so allow for transit.
			if got := <-seen; got.IsZero() || got.Sub(want).Abs() > 500*time.Millisecond {
				t.Fatalf("server saw deadline %v, want the caller's %v", got, want)
			}
		})
	}
}

func TestTimeoutCallerCancelStillEndsCall(t *testing.T) {
	addr, seen := deadlineServer(t, true)
	conn := dialTimeout(t, addr, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- echoCall(ctx, conn) }()
	<-seen // the handler runs
	cancel()
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Fatalf("call after the caller cancelled: %v, want Canceled", err)
	}
}

func TestTimeoutNeverExtendsCallerDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if got := ctxOf(t, Timeout(time.Hour), ctx, "/s/M"); got != ctx {
		t.Errorf("context replaced though the caller's deadline is sooner than the timeout")
	}
}

func TestTimeoutPerMethodAndOff(t *testing.T) {
	ic := TimeoutPerMethod(time.Hour, map[string]time.Duration{"/s/Fast": 10 * time.Millisecond, "/s/Watch": 0})
	ctx := ctxOf(t, ic, context.Background(), "/s/Fast")
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("/s/Fast: context not ended by its 10ms override")
	}
	if ctx.Err() != context.DeadlineExceeded {
		t.Errorf("/s/Fast: context ended with %v, want context.DeadlineExceeded", ctx.Err())
	}
	if ctx := ctxOf(t, ic, context.Background(), "/s/Watch"); ctx.Done() != nil {
		t.Error("/s/Watch got a bound, override 0 means none")
	}
	if ctx := ctxOf(t, Timeout(0), context.Background(), "/s/M"); ctx.Done() != nil {
		t.Error("Timeout(0) bound the call")
	}
}

func TestTimeoutKeepsCallerValues(t *testing.T) {
	type key struct{}
	ctx := context.WithValue(context.Background(), key{}, "v")
	if got := ctxOf(t, Timeout(time.Second), ctx, "/s/M"); got.Value(key{}) != "v" {
		t.Errorf("value = %v, want the caller's", got.Value(key{}))
	}
}

func TestSlotClockBoundsBetweenDAndDPlusOneSlot(t *testing.T) {
	const d = 2 * time.Second
	c := newSlotClock(d)
	for _, now := range []time.Time{time.Now(), time.Now().Add(3 * time.Millisecond), time.Now().Add(time.Second)} {
		dl, ok := c.slot(now).Deadline()
		if !ok {
			t.Fatal("slot context without deadline")
		}
		if dl.Before(now.Add(d)) || !dl.Before(now.Add(d+maxSlot)) {
			t.Errorf("call at %v bounded at %v, want in [now+%v, now+%v)", now, dl, d, d+maxSlot)
		}
		// A deadline without a monotonic reading (String's "m=") is
		// timed on the wall clock: after a backward step every call
		// got the current slot's context, already ended.
		if !strings.Contains(dl.String(), "m=") {
			t.Errorf("call at %v bounded at %v, on the wall clock, want a monotonic deadline", now, dl)
		}
	}
	fresh := newSlotClock(d)
	start := monotime.Time((monotime.Now()/fresh.width + 1) * fresh.width)
	first, _ := fresh.slot(start).Deadline()
	if dl, _ := fresh.slot(start.Add(time.Duration(fresh.width - 1))).Deadline(); !dl.Equal(first) {
		t.Errorf("two calls in one slot bounded at %v and %v, want one deadline", first, dl)
	}
	if dl, _ := fresh.slot(start.Add(time.Duration(fresh.width))).Deadline(); !dl.After(first) {
		t.Errorf("a call one slot later bounded at %v, want after %v", dl, first)
	}
}
