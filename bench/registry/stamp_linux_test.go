package registry

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// monotonic reads CLOCK_MONOTONIC as any process of the machine does.
func monotonic(t *testing.T) int64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano()
}

func TestStampsAreTheMachinesMonotonicClock(t *testing.T) {
	before := monotonic(t)
	s := stampNow()
	if after := monotonic(t); s < before || s > after {
		t.Fatalf("stampNow = %d, not between two reads of CLOCK_MONOTONIC %d and %d", s, before, after)
	}
}

// TestEventLatencyIsMeasuredOnTheMonotonicClock: a write stamped 5 ms ago
// by a writer that reads CLOCK_MONOTONIC (in another process of the
// machine, or in this one) arrives now: the watcher records about 5 ms,
// not the distance between that clock and the wall clock.
func TestEventLatencyIsMeasuredOnTheMonotonicClock(t *testing.T) {
	const ago = 5 * time.Millisecond
	stamp := monotonic(t) - int64(ago)
	d := deliveries{arrivals: newArrivals()}
	d.since.Store(stamp)
	d.deliver(stamp)
	lat := d.lat.sorted()
	if len(lat) != 1 || lat[0] < ago || lat[0] > time.Minute {
		t.Fatalf("latencies %v, want one of 5 ms and a little more", lat)
	}
	if got := d.arrivals.stamped(); len(got) != 1 || got[0] != lat[0] {
		t.Fatalf("arrival %v after the stamp, want the latency %v", got, lat)
	}
}
