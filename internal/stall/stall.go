// Package stall notices the time this process did not run: stopped
// (SIGSTOP), its VM paused, or starved of CPU. A goroutine wakes every
// tick; a wake-up later than the tick by at least MinStall is time lost.
// Work that counts time from its own clock, and expects messages that
// could not be read meanwhile (a leader's TTL deadlines, whose renewals
// waited in its sockets), moves its deadlines by what was lost.
package stall

import (
	"log/slog"
	"sync"
	"time"
)

// MinStall is the shortest lateness counted as lost: shorter ones are a
// busy scheduler's noise.
const MinStall = 250 * time.Millisecond

// Detector counts the time lost since it started. Its methods are safe
// for concurrent use.
type Detector struct {
	tick time.Duration
	log  *slog.Logger
	now  func() time.Time // time.Now; tests replace it

	mu   sync.Mutex
	last time.Time     // the last wake-up
	lost time.Duration // counted at wake-ups before last

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// Start starts a Detector waking every tick; it logs each stall it
// counts on log (nil: no logging). Stop ends it.
func Start(tick time.Duration, log *slog.Logger) *Detector {
	d := newDetector(tick, log, time.Now)
	go d.run()
	return d
}

func newDetector(tick time.Duration, log *slog.Logger, now func() time.Time) *Detector {
	return &Detector{tick: tick, log: log, now: now, last: now(), stop: make(chan struct{}), done: make(chan struct{})}
}

func (d *Detector) run() {
	defer close(d.done)
	t := time.NewTimer(d.tick)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
		d.wake(d.now())
		t.Reset(d.tick)
	}
}

// wake counts the time lost since the last wake-up, at now.
func (d *Detector) wake(now time.Time) {
	d.mu.Lock()
	late := d.late(now)
	d.lost += late
	d.last = now
	d.mu.Unlock()
	if late > 0 && d.log != nil {
		d.log.Warn("this agent did not run for a while: stopped, its machine paused, or starved of CPU; its peers may have taken it for failed",
			"lost", late.Round(time.Millisecond))
	}
}

// late is the time lost between the last wake-up and now.
func (d *Detector) late(now time.Time) time.Duration {
	if l := now.Sub(d.last) - d.tick; l >= MinStall {
		return l
	}
	return 0
}

// Lost returns the time lost since the Detector started, including a
// stall it has not woken from yet: called right after the process
// resumes, before the Detector's goroutine has run, it counts the pause
// already.
func (d *Detector) Lost() time.Duration {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lost + d.late(now)
}

// Stop ends the Detector's goroutine.
func (d *Detector) Stop() {
	d.stopOnce.Do(func() { close(d.stop) })
	<-d.done
}

// Since hands out the time lost since it was last asked: work that moves
// its deadlines by what was lost takes each stretch once. It is for one
// goroutine, or callers that hold a lock of their own.
type Since struct {
	lost func() time.Duration
	seen time.Duration
}

// NewSince counts from what lost says now; a nil lost loses no time.
func NewSince(lost func() time.Duration) *Since {
	s := &Since{lost: lost}
	s.Take()
	return s
}

// Take returns the time lost since the last Take (or NewSince).
func (s *Since) Take() time.Duration {
	if s.lost == nil {
		return 0
	}
	total := s.lost()
	d := total - s.seen
	s.seen = total
	return max(d, 0)
}
