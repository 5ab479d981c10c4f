package serverchain

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// The shed tests use a 1s window of ten 100ms buckets on a fake clock.
const testBucket = 100 * time.Millisecond

func newTestShedder(clock *fakeClock, maxInFlight, floor int, factor float64) *shedder {
	return newShedder(maxInFlight,
		WithShedClock(clock.Now),
		WithShedWindow(10*testBucket, 10),
		WithShedFloor(floor),
		WithShedLatencyFactor(factor))
}

// complete runs n concurrent calls that each take rt on the fake clock.
func complete(t *testing.T, s *shedder, clock *fakeClock, n int, rt time.Duration) {
	t.Helper()
	starts := make([]time.Time, n)
	for i := range starts {
		st, err := s.begin()
		if err != nil {
			t.Fatalf("history call %d shed: %v", i, err)
		}
		starts[i] = st
	}
	clock.Advance(rt)
	for _, st := range starts {
		s.end(st)
	}
}

// hold admits calls until one is shed and returns how many were admitted
// (stopping at limit, to catch a shedder that never sheds).
func hold(s *shedder, limit int) int {
	for i := range limit {
		if _, err := s.begin(); err != nil {
			return i
		}
	}
	return limit
}

func TestShedLimit(t *testing.T) {
	tests := []struct {
		name     string
		floor    int
		factor   float64
		history  int           // calls completed in bucket 0
		rt       time.Duration // their latency
		slow     bool          // complete slow calls in bucket 1 to raise the EWMA
		wantHeld int
	}{
		// 100 passes per 100ms bucket = 1000/s, minRT 20ms: limit 20.
		{"little's law limit when latency inflated", 4, 2, 100, 20 * time.Millisecond, true, 20},
		{"no shedding while latency normal", 4, 2, 100, 20 * time.Millisecond, false, 500},
		{"latency condition disabled", 4, 0, 100, 20 * time.Millisecond, false, 20},
		// 10 passes per bucket, minRT 1ms: limit 1, so the floor rules.
		{"floor 4", 4, 2, 10, time.Millisecond, true, 4},
		{"floor 8", 8, 2, 10, time.Millisecond, true, 8},
		{"limit above floor wins", 30, 2, 100, 40 * time.Millisecond, true, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			s := newTestShedder(clock, 0, tt.floor, tt.factor)
			complete(t, s, clock, tt.history, tt.rt) // ends inside bucket 0
			clock.Advance(testBucket)                // now in bucket 1
			if tt.slow {
				complete(t, s, clock, 10, 5*tt.rt) // lifts the EWMA well above 2x minRT
			}
			if got := hold(s, 500); got != tt.wantHeld {
				t.Fatalf("admitted %d in flight, want %d", got, tt.wantHeld)
			}
			if got := s.inFlight.Load(); got != int64(tt.wantHeld) {
				t.Fatalf("in-flight counter %d after shedding, want %d", got, tt.wantHeld)
			}
			if tt.wantHeld < 500 {
				_, err := s.interceptor().Unary(context.Background(), nil, unaryInfo("/svc/M"), okHandler)
				wantCode(t, err, codes.ResourceExhausted)
			}
		})
	}
}

func TestShedColdStartOnlyHardCap(t *testing.T) {
	clock := newFakeClock()
	if got := hold(newTestShedder(clock, 0, 1, 2), 1000); got != 1000 {
		t.Fatalf("cold shedder without cap admitted %d of 1000", got)
	}
	s := newTestShedder(clock, 3, 1, 2)
	if got := hold(s, 10); got != 3 {
		t.Fatalf("hard cap 3 admitted %d", got)
	}
	s.end(clock.Now())
	if _, err := s.begin(); err != nil {
		t.Fatalf("call after one finished shed: %v", err)
	}
}

func TestShedHistoryExpires(t *testing.T) {
	clock := newFakeClock()
	s := newTestShedder(clock, 0, 4, 2)
	complete(t, s, clock, 10, time.Millisecond)
	clock.Advance(testBucket)
	complete(t, s, clock, 10, 5*time.Millisecond)
	if got := hold(s, 100); got != 4 {
		t.Fatalf("admitted %d, want floor 4", got)
	}
	clock.Advance(20 * testBucket) // whole window stale: no history, no limit
	if _, err := s.begin(); err != nil {
		t.Fatalf("shed with stale history: %v", err)
	}
}

func TestShedInterceptorReleases(t *testing.T) {
	clock := newFakeClock()
	s := newTestShedder(clock, 1, 1, 2)
	ic := s.interceptor()
	for range 3 { // sequential calls never exceed the cap of 1
		u, st := callBoth(context.Background(), ic, "/svc/M", nil)
		wantCode(t, u, codes.OK)
		wantCode(t, st, codes.OK)
	}
	if n := s.inFlight.Load(); n != 0 {
		t.Fatalf("in-flight %d after calls returned", n)
	}
}
