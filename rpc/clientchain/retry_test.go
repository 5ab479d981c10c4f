package clientchain

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// noSleepRetry has zero jitter so backoff never waits.
func noSleepRetry() RetryConfig {
	cfg := DefaultRetryConfig()
	cfg.Rand = func() float64 { return 0 }
	return cfg
}

func TestRetryCodes(t *testing.T) {
	const idem = "/s/Get"
	cases := []struct {
		name         string
		method       string
		unsent       bool // the attempts never reach a server
		errs         []error
		wantAttempts int
		wantCode     codes.Code
	}{
		{"unavailable before reaching a server twice then ok", "/s/Put", true, []error{unavailable(), unavailable()}, 3, codes.OK},
		{"unavailable before reaching a server thrice gives up", "/s/Put", true, []error{unavailable(), unavailable(), unavailable(), unavailable()}, 3, codes.Unavailable},
		{"unavailable after reaching a server not retried for non-idempotent", "/s/Put", false, []error{unavailable()}, 1, codes.Unavailable},
		{"unavailable after reaching a server retried for idempotent", idem, false, []error{unavailable(), unavailable()}, 3, codes.OK},
		{"invalid argument not retried", idem, false, []error{status.Error(codes.InvalidArgument, "bad")}, 1, codes.InvalidArgument},
		{"internal not retried for non-idempotent", "/s/Put", false, []error{status.Error(codes.Internal, "x")}, 1, codes.Internal},
		{"internal retried for idempotent", idem, false, []error{status.Error(codes.Internal, "x")}, 2, codes.OK},
		{"resource exhausted retried for idempotent", idem, false, []error{status.Error(codes.ResourceExhausted, "x")}, 2, codes.OK},
		{"deadline retried for idempotent with live caller", idem, false, []error{status.Error(codes.DeadlineExceeded, "x")}, 2, codes.OK},
		{"deadline not retried for non-idempotent", "/s/Put", false, []error{status.Error(codes.DeadlineExceeded, "x")}, 1, codes.DeadlineExceeded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := noSleepRetry()
			cfg.Idempotent = []string{idem}
			f := script(tc.errs...)
			f.unsent = tc.unsent
			err := call(t, Retry(cfg), context.Background(), tc.method, f.invoke)
			if got := status.Code(err); got != tc.wantCode {
				t.Errorf("code = %v, want %v (err %v)", got, tc.wantCode, err)
			}
			if got := f.attempts(); got != tc.wantAttempts {
				t.Errorf("attempts = %d, want %d", got, tc.wantAttempts)
			}
		})
	}
}

func TestRetryStopsWhenCallerContextDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f := script(unavailable(), unavailable())
	err := call(t, Retry(noSleepRetry()), ctx, "/s/M", f.invoke)
	if status.Code(err) != codes.Unavailable || f.attempts() != 1 {
		t.Errorf("err %v after %d attempts, want Unavailable after 1", err, f.attempts())
	}
}

func TestRetryBudgetExhausted(t *testing.T) {
	cfg := noSleepRetry()
	cfg.MaxAttempts = 10
	cfg.BudgetMax = 2
	cfg.BudgetRatio = 0.5
	ic := Retry(cfg)
	down := func() *fakeInvoker {
		return unsent(unavailable(), unavailable(), unavailable(), unavailable(), unavailable(), unavailable(), unavailable(), unavailable(), unavailable(), unavailable())
	}

	f := down()
	_ = call(t, ic, context.Background(), "/s/M", f.invoke)
	if f.attempts() != 3 {
		t.Fatalf("first call: %d attempts, want 3 (1 + 2 budgeted retries)", f.attempts())
	}
	f = down()
	_ = call(t, ic, context.Background(), "/s/M", f.invoke)
	if f.attempts() != 1 {
		t.Fatalf("budget empty: %d attempts, want 1", f.attempts())
	}
	// Two successes refill one token: one more retry is allowed.
	for range 2 {
		if err := call(t, ic, context.Background(), "/s/M", script().invoke); err != nil {
			t.Fatal(err)
		}
	}
	f = down()
	_ = call(t, ic, context.Background(), "/s/M", f.invoke)
	if f.attempts() != 2 {
		t.Fatalf("after refill: %d attempts, want 2", f.attempts())
	}
}

func TestRetryNeverSleepsPastCallerDeadline(t *testing.T) {
	cfg := DefaultRetryConfig()
	cfg.BaseBackoff = time.Hour
	cfg.MaxBackoff = time.Hour
	cfg.Rand = func() float64 { return 1 } // backoff = 1h, beyond the deadline
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := script(unavailable(), unavailable())
	err := call(t, Retry(cfg), ctx, "/s/M", f.invoke)
	if status.Code(err) != codes.Unavailable || f.attempts() != 1 {
		t.Errorf("err %v after %d attempts, want Unavailable after 1", err, f.attempts())
	}
	if ctx.Err() != nil {
		t.Error("retry waited until the caller's deadline")
	}
}

func TestRetryExcludesFailedPeers(t *testing.T) {
	cfg := noSleepRetry()
	cfg.Idempotent = []string{"/s/M"}
	f := script(unavailable(), unavailable())
	if err := call(t, Retry(cfg), context.Background(), "/s/M", f.invoke); err != nil {
		t.Fatal(err)
	}
	want := [][]string{nil, {"10.0.0.1:1"}, {"10.0.0.1:1", "10.0.0.2:1"}}
	for i, ctx := range f.ctxs {
		if got := ExcludedFrom(ctx); !slices.Equal(got, want[i]) {
			t.Errorf("attempt %d excluded = %v, want %v", i+1, got, want[i])
		}
	}
}

func TestBackoffFullJitterBounds(t *testing.T) {
	cfg := DefaultRetryConfig()
	cfg.Rand = func() float64 { return 0.999999 }
	s := newRetryStage(cfg, invokerStage{})
	for n, ceil := range map[int]time.Duration{1: 25 * time.Millisecond, 2: 50 * time.Millisecond, 3: 100 * time.Millisecond, 10: time.Second, 100: time.Second} {
		if got := s.backoff(n); got > ceil || got < ceil*99/100 {
			t.Errorf("backoff(%d) = %v, want just under %v", n, got, ceil)
		}
	}
}

// A long base backoff doubled many times reaches MaxBackoff and stays
// there; it must not wrap around to a negative (no) wait.
func TestBackoffLongBaseStaysAtMaxBackoff(t *testing.T) {
	cfg := DefaultRetryConfig()
	cfg.MaxAttempts, cfg.BaseBackoff, cfg.MaxBackoff = 40, 20*time.Second, time.Minute
	cfg.Rand = func() float64 { return 0.5 }
	s := newRetryStage(cfg, invokerStage{})
	for n := 1; n < cfg.MaxAttempts; n++ {
		want := min(cfg.BaseBackoff<<min(n-1, 2), cfg.MaxBackoff) / 2
		if got := s.backoff(n); got != want {
			t.Errorf("backoff(%d) = %v, want %v", n, got, want)
		}
	}
}
