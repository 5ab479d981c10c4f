package serverchain

import (
	"context"
	"math"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/internal/methodtable"
)

// RateLimit allows each method perSecond calls per second with bursts of up
// to burst (a token bucket per method, created on its first call; past
// MaxMethods methods, further ones share one bucket). A call
// finding its bucket empty fails with codes.ResourceExhausted "rate limit
// exceeded for <method>". burst < 1 means max(1, ceil(perSecond)). Health
// checks (grpc.health.v1.Health) are not limited: anyone may call them, and
// a stranger spending their bucket would fail the checks of load balancers
// and the agent. It panics if perSecond <= 0.
func RateLimit(perSecond float64, burst int) Interceptor {
	l := newRateLimiter(perSecond, burst, time.Now)
	return Interceptor{
		Unary: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if !unlimited(info.FullMethod) {
				if err := l.allow(info.FullMethod); err != nil {
					return nil, err
				}
			}
			return handler(ctx, req)
		},
		Stream: func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if !unlimited(info.FullMethod) {
				if err := l.allow(info.FullMethod); err != nil {
					return err
				}
			}
			return handler(srv, ss)
		},
	}
}

type rateLimiter struct {
	rate    float64 // tokens per second
	burst   float64
	now     func() time.Time
	buckets methodtable.Table[*tokenBucket]
}

func newRateLimiter(perSecond float64, burst int, now func() time.Time) *rateLimiter {
	if !(perSecond > 0) {
		panic("serverchain: RateLimit needs perSecond > 0")
	}
	if burst < 1 {
		burst = max(1, int(math.Ceil(perSecond)))
	}
	return &rateLimiter{rate: perSecond, burst: float64(burst), now: now}
}

func (l *rateLimiter) allow(method string) error {
	b := l.buckets.Get(method, l.newBucket)
	if b.take(l.now(), l.rate, l.burst) {
		return nil
	}
	return status.Errorf(codes.ResourceExhausted, "rate limit exceeded for %s", method)
}

func (l *rateLimiter) newBucket(string) *tokenBucket {
	return &tokenBucket{tokens: l.burst, last: l.now()}
}

// tokenBucket holds up to burst tokens, refilled continuously at rate per
// second. Its mutex is held for a few arithmetic operations only.
type tokenBucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func (b *tokenBucket) take(now time.Time, rate, burst float64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(burst, b.tokens+el.Seconds()*rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
