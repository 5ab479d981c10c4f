package rpc_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/rpc"
)

// relay registers the echo service with a handler that calls next (a
// second hop) with the incoming context, and reports the deadline it saw.
func relay(s *grpc.Server, next *grpc.ClientConn, deadline chan<- time.Time) {
	grpctest.RegisterEcho(s, func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		if next == nil {
			d, _ := ctx.Deadline()
			deadline <- d
			return in, nil
		}
		return in, call(ctx, next)
	})
}

func startTraced(t *testing.T, tp *sdktrace.TracerProvider, next *grpc.ClientConn, deadline chan<- time.Time) *rpc.Server {
	srv, err := rpc.NewServer(rpc.ServerConfig{Name: "hop.rpc", ListenOn: "127.0.0.1:0", NoRegister: true, Timeout: -1},
		rpc.WithServerTracing(tp), rpc.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	relay(srv.GRPC(), next, deadline)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	return srv
}

// One call crosses two hops: every span belongs to one trace, and the
// caller's deadline reaches the last hop.
func TestTraceAndDeadlineSpanTwoHops(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())

	deadline := make(chan time.Time, 1)
	last := startTraced(t, tp, nil, deadline)
	toLast, err := rpc.Dial(context.Background(), "direct:///"+last.Addr(), rpc.WithTracing(tp), rpc.WithTimeout(0))
	if err != nil {
		t.Fatal(err)
	}
	defer toLast.Close()
	first := startTraced(t, tp, toLast, deadline)
	toFirst, err := rpc.Dial(context.Background(), "direct:///"+first.Addr(), rpc.WithTracing(tp), rpc.WithTimeout(0))
	if err != nil {
		t.Fatal(err)
	}
	defer toFirst.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Second)
	defer cancel()
	want, _ := ctx.Deadline()
	if err := call(ctx, toFirst); err != nil {
		t.Fatal(err)
	}
	got := <-deadline
	// gRPC sends the remaining time, not the instant, so the deadline seen
	// two hops away is the caller's give or take transit and rounding; with
	// no propagation it would be absent or the 2 s default.
	if d := got.Sub(want); got.IsZero() || d > 500*time.Millisecond || d < -500*time.Millisecond {
		t.Fatalf("deadline at the second hop = %v, want the caller's %v", got, want)
	}

	// A server span ends after its response is sent, so possibly after the
	// client has it: wait for all four (client and server for each hop).
	var spans []sdktrace.ReadOnlySpan
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if spans = rec.Ended(); len(spans) >= 4 || time.Now().After(end) {
			break
		}
	}
	if len(spans) != 4 {
		t.Fatalf("%d spans ended, want 4 (client and server for each of 2 hops)", len(spans))
	}
	traceID := spans[0].SpanContext().TraceID()
	for _, s := range spans {
		if s.SpanContext().TraceID() != traceID {
			t.Fatalf("span %q is in trace %s, want every span in %s", s.Name(), s.SpanContext().TraceID(), traceID)
		}
	}
}

// The client's default timeout bounds a call without being a deadline the
// server sees; a caller's own deadline is one.
func TestDialDefaultTimeoutIsNotSentButCallerDeadlineIs(t *testing.T) {
	deadline := make(chan time.Time, 1)
	srv := startTraced(t, sdktrace.NewTracerProvider(), nil, deadline)
	conn, err := rpc.Dial(context.Background(), "direct:///"+srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	if err := call(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	if got := <-deadline; !got.IsZero() {
		t.Errorf("server saw deadline %v for a call with only the client's default timeout, want none", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Second)
	defer cancel()
	want, _ := ctx.Deadline()
	if err := call(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if got := <-deadline; got.IsZero() || got.Sub(want).Abs() > 500*time.Millisecond {
		t.Errorf("server saw deadline %v, want the caller's %v", got, want)
	}
}
