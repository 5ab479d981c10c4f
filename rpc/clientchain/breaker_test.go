package clientchain

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func testBreaker(clock *fakeClock, fallback func(context.Context, string, error) error) BreakerConfig {
	cfg := DefaultBreakerConfig()
	cfg.Now = clock.now
	cfg.Rand = func() float64 { return 0.5 }
	cfg.Fallback = fallback
	return cfg
}

func TestBreakerRejectsAfterFailuresAndRecovers(t *testing.T) {
	clock := &fakeClock{}
	clock.advance(time.Hour)
	ic := Breaker(testBreaker(clock, nil))
	failing := alwaysUnavailable()

	// Failures: p = requests/(requests+1) exceeds 0.5 from the second call.
	for range 20 {
		_ = call(t, ic, context.Background(), "/s/M", failing.invoke)
	}
	reached := failing.attempts()
	if reached >= 20 {
		t.Fatalf("invoker reached %d of 20 times, breaker never rejected", reached)
	}
	err := call(t, ic, context.Background(), "/s/M", failing.invoke)
	if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != "circuit breaker open for /s/M" {
		t.Fatalf("err = %v, want breaker rejection", err)
	}
	if failing.attempts() != reached {
		t.Fatal("rejected call reached the invoker")
	}
	// Another method is unaffected.
	ok := script()
	if err := call(t, ic, context.Background(), "/s/Other", ok.invoke); err != nil || ok.attempts() != 1 {
		t.Fatalf("other method: err %v, attempts %d", err, ok.attempts())
	}

	// Once the window has passed, calls go through again and successes keep
	// it closed.
	clock.advance(11 * time.Second)
	ok = script()
	for range 20 {
		if err := call(t, ic, context.Background(), "/s/M", ok.invoke); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	}
	if ok.attempts() != 20 {
		t.Fatalf("after recovery invoker reached %d of 20 times", ok.attempts())
	}
}

func TestBreakerIgnoresClientErrors(t *testing.T) {
	clock := &fakeClock{}
	ic := Breaker(testBreaker(clock, nil))
	f := &fakeInvoker{errs: make([]error, 50)}
	for i := range f.errs {
		f.errs[i] = status.Error(codes.InvalidArgument, "bad")
	}
	for range 50 {
		_ = call(t, ic, context.Background(), "/s/M", f.invoke)
	}
	if f.attempts() != 50 {
		t.Fatalf("InvalidArgument tripped the breaker: %d of 50 reached", f.attempts())
	}
}

func TestBreakerFallback(t *testing.T) {
	clock := &fakeClock{}
	served := errors.New("served from cache")
	var gotMethod string
	var gotErr error
	ic := Breaker(testBreaker(clock, func(_ context.Context, method string, err error) error {
		gotMethod, gotErr = method, err
		return served
	}))
	f := script(unavailable(), unavailable(), unavailable(), unavailable())
	var err error
	for range 4 {
		err = call(t, ic, context.Background(), "/s/M", f.invoke)
	}
	if !errors.Is(err, served) {
		t.Fatalf("err = %v, want the fallback's", err)
	}
	if gotMethod != "/s/M" || status.Code(gotErr) != codes.Unavailable {
		t.Errorf("fallback got (%q, %v), want (/s/M, Unavailable)", gotMethod, gotErr)
	}
}

func TestBreakerConfigValidate(t *testing.T) {
	for _, c := range []BreakerConfig{{K: -1}, {Window: -1}, {Buckets: -1}, {Window: 5, Buckets: 10}} {
		if c.Validate() == nil {
			t.Errorf("%+v validated", c)
		}
	}
	if err := DefaultBreakerConfig().Validate(); err != nil {
		t.Error(err)
	}
}

// Failures keep counting against a method for the whole window, and only
// for it: a method judged healthy without reading its buckets must be one
// with no failure in the window.
func TestBreakerKeepsRejectingUntilFailuresLeaveTheWindow(t *testing.T) {
	clock := &fakeClock{}
	clock.advance(time.Hour)
	ic := Breaker(testBreaker(clock, nil))
	failing := alwaysUnavailable()
	for range 20 {
		_ = call(t, ic, context.Background(), "/s/M", failing.invoke)
	}
	clock.advance(9 * time.Second) // the failures' bucket is still in the 10 s window
	ok := script()
	if err := call(t, ic, context.Background(), "/s/M", ok.invoke); status.Convert(err).Message() != "circuit breaker open for /s/M" {
		t.Fatalf("call 9 s after 20 failures: %v, want a rejection (they are still in the window)", err)
	}
	clock.advance(2 * time.Second)
	if err := call(t, ic, context.Background(), "/s/M", ok.invoke); err != nil {
		t.Fatalf("call 11 s after the last failure: %v, want it through (no failure left in the window)", err)
	}
}

// With K below 1 the breaker throttles a share of calls even while every
// one succeeds; that must not be skipped for a method that never failed.
func TestBreakerWithKBelowOneThrottlesEvenWithoutFailures(t *testing.T) {
	clock := &fakeClock{}
	cfg := testBreaker(clock, nil)
	cfg.K = 0.5
	cfg.Rand = func() float64 { return 0 }
	ic := Breaker(cfg)
	ok := script()
	for range 10 {
		_ = call(t, ic, context.Background(), "/s/M", ok.invoke)
	}
	if ok.attempts() == 10 {
		t.Fatal("a breaker with K 0.5 let all of 10 successful calls through, want some throttled")
	}
}
