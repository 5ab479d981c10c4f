package stall

import (
	"testing"
	"time"
)

// TestDetectorCountsOnlyLateWakeUps: wake-ups on time, or late by less
// than MinStall, lose nothing; a late one loses its lateness, counted by
// Lost even before the goroutine wakes from it, and once only.
func TestDetectorCountsOnlyLateWakeUps(t *testing.T) {
	const tick = 100 * time.Millisecond
	t0 := time.Unix(1000, 0)
	now := t0
	d := newDetector(tick, nil, func() time.Time { return now })
	check := func(want time.Duration, why string) {
		t.Helper()
		if got := d.Lost(); got != want {
			t.Fatalf("%s: Lost = %v, want %v", why, got, want)
		}
	}
	now = now.Add(tick)
	d.wake(now)
	now = now.Add(tick + MinStall - time.Millisecond)
	d.wake(now)
	check(0, "wake-ups on time and a little late")

	now = now.Add(5 * time.Second) // stopped; not woken yet
	check(5*time.Second-tick, "a stall the goroutine has not woken from")
	now = now.Add(10 * time.Millisecond)
	d.wake(now)
	check(5*time.Second+10*time.Millisecond-tick, "the same stall, woken from")
	now = now.Add(tick)
	d.wake(now)
	check(5*time.Second+10*time.Millisecond-tick, "a wake-up on time after the stall")
}

// TestDetectorStops: Stop ends the goroutine, and may be called twice.
func TestDetectorStops(t *testing.T) {
	d := Start(time.Millisecond, nil)
	time.Sleep(5 * time.Millisecond)
	d.Stop()
	d.Stop()
	select {
	case <-d.done:
	default:
		t.Fatal("the detector's goroutine is still running after Stop")
	}
}

// TestSinceTakesEachStretchOnce: Since hands out what was lost since it
// was last asked, each stretch once, none of what was lost before it was
// made, and nothing without a source.
func TestSinceTakesEachStretchOnce(t *testing.T) {
	lost := 3 * time.Second
	s := NewSince(func() time.Duration { return lost })
	if d := s.Take(); d != 0 {
		t.Fatalf("Take right after NewSince = %v, want 0 (lost before it)", d)
	}
	lost += 5 * time.Second
	if d := s.Take(); d != 5*time.Second {
		t.Fatalf("Take after a 5 s stall = %v", d)
	}
	if d := s.Take(); d != 0 {
		t.Fatalf("Take again = %v, want 0", d)
	}
	if d := NewSince(nil).Take(); d != 0 {
		t.Fatalf("Take without a source = %v, want 0", d)
	}
}
