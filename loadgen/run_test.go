package loadgen

import (
	"context"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// counting returns an echo handler that counts its calls in n and
// answers every 3rd one with Unavailable when failThird is set.
func counting(n *atomic.Int64, failThird bool) func(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	return func(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		if k := n.Add(1); failThird && k%3 == 0 {
			return nil, status.Error(codes.Unavailable, "every third call fails")
		}
		return in, nil
	}
}

func TestRunSendsExactlyTheRequestsAskedAndCountsAddUp(t *testing.T) {
	var served atomic.Int64
	conn := serveEcho(t, false, counting(&served, false))
	cfg := echoConfig(t, conn, 8, 503)
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 503 || res.Codes[codes.OK] != 503 || res.Errors() != 0 {
		t.Fatalf("requests %d, codes %v, errors %d; want 503 OK", res.Requests, res.Codes, res.Errors())
	}
	if served.Load() != 503 {
		t.Fatalf("server served %d calls, want 503", served.Load())
	}
	if res.Latency.Count() != 503 || res.Latency.Min() <= 0 || res.Latency.Max() < res.Latency.Quantile(0.99) {
		t.Fatalf("latency: count %d min %s p99 %s max %s", res.Latency.Count(), res.Latency.Min(), res.Latency.Quantile(0.99), res.Latency.Max())
	}
	if res.Interrupted || res.Elapsed <= 0 || res.QPS() <= 0 || res.Method != "/test.Echo/Call" {
		t.Fatalf("interrupted %v elapsed %s qps %g method %s", res.Interrupted, res.Elapsed, res.QPS(), res.Method)
	}
}

func TestRunCountsErrorsByCode(t *testing.T) {
	var served atomic.Int64
	conn := serveEcho(t, false, counting(&served, true))
	res, err := Run(t.Context(), echoConfig(t, conn, 4, 300))
	if err != nil {
		t.Fatal(err)
	}
	if res.Codes[codes.Unavailable] != 100 || res.Codes[codes.OK] != 200 || len(res.Codes) != 2 {
		t.Fatalf("codes %v, want 100 Unavailable and 200 OK", res.Codes)
	}
	if res.Errors() != 100 || res.Requests != 300 || res.Latency.Count() != 300 {
		t.Fatalf("errors %d requests %d latencies %d, want 100, 300, 300", res.Errors(), res.Requests, res.Latency.Count())
	}
}

func TestRunSpreadsCallersOverConnections(t *testing.T) {
	var a, b atomic.Int64
	connA := serveEcho(t, false, counting(&a, false))
	connB := serveEcho(t, false, counting(&b, false))
	cfg := echoConfig(t, connA, 4, 400)
	cfg.Conns = []grpc.ClientConnInterface{connA, connB}
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 400 || a.Load() == 0 || b.Load() == 0 || a.Load()+b.Load() != 400 {
		t.Fatalf("requests %d, served %d + %d: want 400 over both connections", res.Requests, a.Load(), b.Load())
	}
}

func TestRunPacesCallsAtTheRate(t *testing.T) {
	var served atomic.Int64
	conn := serveEcho(t, false, counting(&served, false))
	clock := newFakeClock()
	cfg := echoConfig(t, conn, 8, 100)
	cfg.Rate = 50
	cfg.clock = clock
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Call k is due at k/50 s: the last of 100 at 99 × 20 ms, and the fake
	// clock only moves by waiting for a slot.
	if res.Requests != 100 || served.Load() != 100 {
		t.Fatalf("requests %d, served %d, want 100", res.Requests, served.Load())
	}
	if want := 99 * 20 * time.Millisecond; res.Elapsed != want {
		t.Fatalf("the calls' slots end at %s, want %s", res.Elapsed, want)
	}
}

func TestPacerHandsOutOneSlotPerInterval(t *testing.T) {
	clock := newFakeClock()
	p := newPacer(clock, 4) // every 250 ms
	start := clock.Now()
	for k := range 10 {
		if !p.wait(t.Context(), nil) {
			t.Fatal("wait returned false")
		}
		if got, want := clock.Now().Sub(start), time.Duration(k)*250*time.Millisecond; got != want {
			t.Fatalf("call %d started at %s, want %s", k, got, want)
		}
	}
	// A caller that fell behind gets its overdue slot at once.
	clock.SleepUntil(t.Context(), nil, start.Add(10*time.Second))
	p.wait(t.Context(), nil)
	if got := clock.Now().Sub(start); got != 10*time.Second {
		t.Fatalf("an overdue slot waited until %s", got)
	}
}

func TestPacerKeepsTheRateOverALongRun(t *testing.T) {
	clock := newFakeClock()
	p := newPacer(clock, 3) // every 333.33 ms: no whole number of nanoseconds
	start := clock.Now()
	p.next = 3_000_000
	p.wait(t.Context(), nil)
	if got, want := clock.Now().Sub(start), 1_000_000*time.Second; got != want {
		t.Fatalf("call 3,000,000 at 3 calls/s started at %s, want %s", got, want)
	}
}

func TestPacerAtATinyRateWaitsInsteadOfRacing(t *testing.T) {
	clock := newFakeClock()
	p := newPacer(clock, 1e-12) // one call every 31,700 years
	start := clock.Now()
	p.wait(t.Context(), nil) // call 0: at once
	p.wait(t.Context(), nil)
	if got := clock.Now().Sub(start); got < 100_000*time.Hour {
		t.Fatalf("the second call at 1e-12 calls/s was due %s after the first", got)
	}
}

func TestRunStopsStartingCallsWhenTheDurationIsOver(t *testing.T) {
	var served atomic.Int64
	conn := serveEcho(t, false, counting(&served, false))
	cfg := echoConfig(t, conn, 4, 0)
	cfg.Duration = 300 * time.Millisecond
	var reports atomic.Int64
	cfg.ProgressInterval = 10 * time.Millisecond
	cfg.Progress = func(p Progress) {
		if p.Requests < 0 || p.Errors != 0 {
			t.Errorf("progress %+v", p)
		}
		reports.Add(1)
	}
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.Requests != served.Load() || res.Errors() != 0 || res.Interrupted {
		t.Fatalf("requests %d, served %d, errors %d, interrupted %v", res.Requests, served.Load(), res.Errors(), res.Interrupted)
	}
	if res.Elapsed < cfg.Duration {
		t.Fatalf("elapsed %s, shorter than the duration %s", res.Elapsed, cfg.Duration)
	}
	if reports.Load() == 0 {
		t.Fatal("no progress reported in 300 ms at 10 ms intervals")
	}
}

func TestRunInterruptedKeepsWhatItMeasured(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var served atomic.Int64
	conn := serveEcho(t, false, func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		if served.Add(1) >= 50 {
			cancel() // Ctrl-C while calls are in flight
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return in, nil
	})
	cfg := echoConfig(t, conn, 4, 0)
	cfg.Duration = time.Hour
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted {
		t.Fatal("result not marked interrupted")
	}
	if res.Requests == 0 || res.Requests >= 50 || res.Errors() != 0 {
		t.Fatalf("requests %d, codes %v: want the calls before the interrupt, all OK", res.Requests, res.Codes)
	}
}

func TestRunCountsCallsPastTheTimeoutAsDeadlineExceeded(t *testing.T) {
	conn := serveEcho(t, false, func(ctx context.Context, _ *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	cfg := echoConfig(t, conn, 2, 6)
	cfg.Timeout = 20 * time.Millisecond
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Codes[codes.DeadlineExceeded] != 6 {
		t.Fatalf("codes %v, want 6 DeadlineExceeded", res.Codes)
	}
}

func TestRunSendsTheMetadata(t *testing.T) {
	conn := serveEcho(t, false, func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		if got := md.Get("tenant"); len(got) != 1 || got[0] != "blue" {
			return nil, status.Errorf(codes.InvalidArgument, "tenant %q", got)
		}
		return in, nil
	})
	cfg := echoConfig(t, conn, 2, 10)
	cfg.Metadata = metadata.Pairs("tenant", "blue")
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Codes[codes.OK] != 10 {
		t.Fatalf("codes %v, want 10 OK", res.Codes)
	}
}

func TestConfigValidateNamesWhatIsWrong(t *testing.T) {
	conn := serveEcho(t, false, nil)
	good := echoConfig(t, conn, 1, 1)
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no bound", func(c *Config) { c.Requests = 0 }, "no bound"},
		{"no callers", func(c *Config) { c.Concurrency = 0 }, "concurrency 0"},
		{"streaming", func(c *Config) { c.Method = echoMethod(t, "Watch") }, "streaming method"},
		{"wrong request", func(c *Config) { c.Request = &wrapperspb.StringValue{} }, "takes a google.protobuf.BytesValue"},
		{"no connection", func(c *Config) { c.Conns = nil }, "no connection"},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "rate -1"},
		{"rate not a number", func(c *Config) { c.Rate = math.NaN() }, "rate NaN"},
		{"infinite rate", func(c *Config) { c.Rate = math.Inf(1) }, "rate +Inf"},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "timeout -1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.change(&cfg)
			_, err := Run(t.Context(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
	if err := good.Validate(); err != nil {
		t.Fatalf("a good config: %v", err)
	}
}

// TestRunQPSLeavesOutTheCallsInFlightAfterTheDuration runs a load for a
// duration in which one call hangs until its timeout, far past the
// duration's end: the QPS is the calls finished within the duration per
// second of it, not of the wait for the hung call.
func TestRunQPSLeavesOutTheCallsInFlightAfterTheDuration(t *testing.T) {
	var served atomic.Int64
	conn := serveEcho(t, false, func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		if served.Add(1) == 1 {
			<-ctx.Done() // hangs until the call's timeout
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return in, nil
	})
	cfg := echoConfig(t, conn, 2, 0)
	cfg.Duration = 300 * time.Millisecond
	cfg.Timeout = 3 * time.Second
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The hung call finished after the window, and so may the other
	// caller's last one.
	if res.Codes[codes.DeadlineExceeded] != 1 || res.AfterWindow < 1 || res.AfterWindow > 2 || res.Codes[codes.OK] == 0 {
		t.Fatalf("codes %v, after the window %d: want the hung call past its deadline, 1 or 2 calls after the window, and some OK",
			res.Codes, res.AfterWindow)
	}
	if res.Window != cfg.Duration || res.Elapsed < cfg.Timeout {
		t.Fatalf("window %s, elapsed %s: want the window %s, the elapsed time past the hung call's timeout %s",
			res.Window, res.Elapsed, cfg.Duration, cfg.Timeout)
	}
	within := res.Requests - res.AfterWindow
	want := float64(within) / cfg.Duration.Seconds()
	if got := res.QPS(); math.Abs(got-want) > 1e-9*want {
		t.Fatalf("QPS %g, want %g: the %d calls finished within the %s window per second of it",
			got, want, within, cfg.Duration)
	}
}
