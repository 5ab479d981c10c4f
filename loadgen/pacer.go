package loadgen

import (
	"context"
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
	clock    clock
	start    time.Time
	interval time.Duration

	mu   sync.Mutex
	next int64 // the next slot to hand out
}

func newPacer(c clock, rate float64) *pacer {
	return &pacer{clock: c, start: c.Now(), interval: time.Duration(float64(time.Second) / rate)}
}

// wait takes the next slot and waits for it; false means ctx ended or stop
// closed first.
func (p *pacer) wait(ctx context.Context, stop <-chan struct{}) bool {
	p.mu.Lock()
	k := p.next
	p.next++
	p.mu.Unlock()
	return p.clock.SleepUntil(ctx, stop, p.start.Add(time.Duration(k)*p.interval))
}
