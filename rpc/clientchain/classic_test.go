package clientchain

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The classic breaker opens after Failures consecutive failures, rejects
// while open, lets one probe through after OpenFor, and closes on its
// success (or opens again on its failure).
func TestClassicBreakerOpensHalfOpensAndCloses(t *testing.T) {
	clock := &fakeClock{}
	clock.advance(time.Hour)
	cfg := DefaultBreakerConfig()
	cfg.Mode, cfg.Failures, cfg.OpenFor, cfg.Now = BreakerClassic, 3, 5*time.Second, clock.now
	ic := Breaker(cfg)

	failing := script(unavailable(), unavailable(), unavailable(), unavailable(), unavailable())
	for i := 0; i < 3; i++ {
		if err := call(t, ic, context.Background(), "/s/M", failing.invoke); status.Code(err) != codes.Unavailable {
			t.Fatalf("failure %d: %v", i, err)
		}
	}
	// Open: rejected without reaching the backend.
	err := call(t, ic, context.Background(), "/s/M", failing.invoke)
	if status.Convert(err).Message() != "circuit breaker open for /s/M" || failing.attempts() != 3 {
		t.Fatalf("while open: %v after %d attempts", err, failing.attempts())
	}
	// Half-open after OpenFor: one probe; it fails, so open again.
	clock.advance(6 * time.Second)
	if err := call(t, ic, context.Background(), "/s/M", failing.invoke); status.Convert(err).Message() != "down" || failing.attempts() != 4 {
		t.Fatalf("failing probe: %v after %d attempts", err, failing.attempts())
	}
	if err := call(t, ic, context.Background(), "/s/M", failing.invoke); failing.attempts() != 4 || err == nil {
		t.Fatalf("after a failed probe the breaker must be open again: %v, %d attempts", err, failing.attempts())
	}
	// Next probe succeeds: closed, every call goes through.
	clock.advance(6 * time.Second)
	ok := script()
	for i := 0; i < 10; i++ {
		if err := call(t, ic, context.Background(), "/s/M", ok.invoke); err != nil {
			t.Fatalf("after a good probe: %v", err)
		}
	}
	if ok.attempts() != 10 {
		t.Fatalf("%d of 10 calls reached the backend after closing", ok.attempts())
	}
	// Application errors do not count as failures.
	bad := script(status.Error(codes.InvalidArgument, "no"), status.Error(codes.InvalidArgument, "no"),
		status.Error(codes.InvalidArgument, "no"), status.Error(codes.InvalidArgument, "no"))
	for i := 0; i < 4; i++ {
		call(t, ic, context.Background(), "/s/M", bad.invoke)
	}
	if bad.attempts() != 4 {
		t.Fatal("InvalidArgument answers opened the breaker")
	}
}

func TestBreakerValidatesMode(t *testing.T) {
	if err := (BreakerConfig{Mode: 7}).Validate(); err == nil {
		t.Fatal("unknown mode accepted")
	}
}

// Retries, breaker rejections and calls in flight show in the metrics.
func TestChainMetricsCountRetriesAndRejections(t *testing.T) {
	reg := prometheus.NewRegistry()
	clock := &fakeClock{}
	clock.advance(time.Hour)
	cfg := DefaultConfig()
	cfg.Registerer = reg
	cfg.Timeout = 0
	cfg.Retry.NoBudget = true
	cfg.Retry.BaseBackoff, cfg.Retry.MaxBackoff = time.Microsecond, time.Microsecond
	cfg.Breaker.Mode, cfg.Breaker.Failures, cfg.Breaker.OpenFor, cfg.Breaker.Now = BreakerClassic, 1, time.Minute, clock.now
	unary, _, err := NewChain(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Two Unavailable then OK: 2 retries, success.
	if err := call(t, unary, context.Background(), "/s/M", unsent(unavailable(), unavailable()).invoke); err != nil {
		t.Fatal(err)
	}
	if got := gathered(t, reg, "zrpc_client_retries_total")["method=/s/M"]; got != 2 {
		t.Fatalf("retries = %v, want 2", got)
	}
	// Three failures exhaust the attempts and open the breaker; the next
	// call is rejected.
	call(t, unary, context.Background(), "/s/N", unsent(unavailable(), unavailable(), unavailable()).invoke)
	err = call(t, unary, context.Background(), "/s/N", script().invoke)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("call after opening: %v", err)
	}
	if got := gathered(t, reg, "zrpc_client_breaker_rejections_total")["method=/s/N"]; got != 1 {
		t.Fatalf("rejections = %v, want 1", got)
	}
}

// A call its caller cancelled says nothing of the backend: a cancelled
// half-open probe leaves the breaker half-open (the next call probes
// again) instead of closing it, and a cancelled call does not break a run
// of consecutive failures.
func TestClassicBreakerIgnoresCallsTheCallerCancelled(t *testing.T) {
	clock := &fakeClock{}
	clock.advance(time.Hour)
	cfg := DefaultBreakerConfig()
	cfg.Mode, cfg.Failures, cfg.OpenFor, cfg.Now = BreakerClassic, 3, 5*time.Second, clock.now
	ic := Breaker(cfg)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	canceledErr := status.Error(codes.Canceled, "context canceled")

	// fail, fail, cancelled, fail: three consecutive failures open it.
	for i, step := range []struct {
		ctx context.Context
		err error
	}{{context.Background(), unavailable()}, {context.Background(), unavailable()}, {cancelled, canceledErr}, {context.Background(), unavailable()}} {
		if err := call(t, ic, step.ctx, "/s/M", script(step.err).invoke); status.Code(err) != status.Code(step.err) {
			t.Fatalf("call %d: %v, want %v", i, err, step.err)
		}
	}
	failing := alwaysUnavailable()
	if err := call(t, ic, context.Background(), "/s/M", failing.invoke); failing.attempts() != 0 || status.Code(err) != codes.Unavailable {
		t.Fatalf("after three failures around a cancelled call the breaker must be open: %v, %d attempts", err, failing.attempts())
	}

	// Half-open: the probe's caller cancels it. Still half-open, so the
	// next call is a probe; it fails, and the breaker opens again.
	clock.advance(6 * time.Second)
	probe := script(canceledErr)
	if err := call(t, ic, cancelled, "/s/M", probe.invoke); probe.attempts() != 1 || status.Code(err) != codes.Canceled {
		t.Fatalf("probe: %v after %d attempts", err, probe.attempts())
	}
	if err := call(t, ic, context.Background(), "/s/M", failing.invoke); failing.attempts() != 1 {
		t.Fatalf("the call after a cancelled probe must probe again: %v, %d attempts", err, failing.attempts())
	}
	if err := call(t, ic, context.Background(), "/s/M", failing.invoke); failing.attempts() != 1 {
		t.Fatalf("a cancelled probe closed the breaker: a failed probe after it left it closed (%v, %d attempts)", err, failing.attempts())
	}
}
