package serverchain

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRateLimitBucket(t *testing.T) {
	clock := newFakeClock()
	l := newRateLimiter(2, 3, clock.Now)
	step := func(method string, want codes.Code) {
		t.Helper()
		wantCode(t, l.allow(method), want)
	}
	for range 3 {
		step("/svc/A", codes.OK)
	}
	step("/svc/A", codes.ResourceExhausted)
	if msg := status.Convert(l.allow("/svc/A")).Message(); msg != "rate limit exceeded for /svc/A" {
		t.Fatalf("message %q", msg)
	}
	step("/svc/B", codes.OK) // buckets are per method

	clock.Advance(499 * time.Millisecond) // 0.998 tokens: not yet
	step("/svc/A", codes.ResourceExhausted)
	clock.Advance(time.Millisecond) // one token
	step("/svc/A", codes.OK)
	step("/svc/A", codes.ResourceExhausted)

	clock.Advance(time.Hour) // refills to burst, not beyond
	for range 3 {
		step("/svc/A", codes.OK)
	}
	step("/svc/A", codes.ResourceExhausted)
}

func TestRateLimitDefaultBurst(t *testing.T) {
	l := newRateLimiter(2.5, 0, newFakeClock().Now)
	if l.burst != 3 {
		t.Fatalf("burst = %v, want 3", l.burst)
	}
}

func TestRateLimitInterceptor(t *testing.T) {
	ic := RateLimit(1e-6, 1) // one call, then nothing for ~11 days
	u, s := callBoth(context.Background(), ic, "/svc/M", nil)
	wantCode(t, u, codes.OK)
	wantCode(t, s, codes.ResourceExhausted)
}

// Past MaxMethods methods, further methods share one bucket: a stranger
// sending new method names grows no bucket per name, and the methods
// already known keep their own.
func TestRateLimitBoundsMethods(t *testing.T) {
	l := newRateLimiter(1e-6, 1, newFakeClock().Now) // one call per bucket
	for i := range MaxMethods {
		wantCode(t, l.allow(fmt.Sprintf("/svc/M%d", i)), codes.OK)
	}
	wantCode(t, l.allow("/stranger/A"), codes.OK)
	wantCode(t, l.allow("/stranger/B"), codes.ResourceExhausted) // shares A's bucket
	wantCode(t, l.allow("/svc/M0"), codes.ResourceExhausted)     // its own, spent
	if n := l.buckets.Len(); n != MaxMethods+1 {
		t.Fatalf("%d buckets, want %d", n, MaxMethods+1)
	}
}

// Health checks are not rate limited: a stranger calling them cannot
// spend the bucket that load balancers' and the agent's checks need.
func TestRateLimitSkipsHealthChecks(t *testing.T) {
	ic := RateLimit(1e-6, 1)
	for range 3 {
		u, s := callBoth(context.Background(), ic, "/grpc.health.v1.Health/Check", nil)
		wantCode(t, u, codes.OK)
		wantCode(t, s, codes.OK)
	}
}
