package loadgen

import (
	"context"
	"math"
	"sync"
	"time"
)

// clock is the time Run and the pacer see; tests give a fake one.
type clock interface {
	Now() time.Time
	// SleepUntil waits until t, or until ctx ends or stop closes, and
	// reports whether t was reached.
	SleepUntil(ctx context.Context, stop <-chan struct{}, t time.Time) bool
}

// realClock is the wall clock.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) SleepUntil(ctx context.Context, stop <-chan struct{}, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}

// pacer spaces calls rate per second apart over all callers: call k (from
// 0) is due at start + k/rate. A call that falls behind its slot starts at
// once, so over a run the rate holds on average and never above it by
// more than the calls that were late.
type pacer struct {
	clock clock
	start time.Time
	rate  float64

	mu   sync.Mutex
	next int64 // the next slot to hand out
}

func newPacer(c clock, rate float64) *pacer {
	return &pacer{clock: c, start: c.Now(), rate: rate}
}

// due returns when slot k is due. It is computed from k, not by adding up
// an interval rounded to the nanosecond, so the rate does not drift over a
// long run; a slot too far off to be told in a time.Duration (a rate far
// below one call per second) is due at the end of time.
func (p *pacer) due(k int64) time.Time {
	offset := float64(k) * float64(time.Second) / p.rate
	if offset >= math.MaxInt64 {
		return p.start.Add(math.MaxInt64)
	}
	return p.start.Add(time.Duration(offset))
}

// wait takes the next slot and waits for it; false means ctx ended or stop
// closed first.
func (p *pacer) wait(ctx context.Context, stop <-chan struct{}) bool {
	p.mu.Lock()
	k := p.next
	p.next++
	p.mu.Unlock()
	return p.clock.SleepUntil(ctx, stop, p.due(k))
}
