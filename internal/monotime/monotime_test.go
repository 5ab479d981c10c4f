package monotime

import (
	"strings"
	"testing"
	"time"
)

// An instant comes back as the same time, with a monotonic reading (the
// "m=" time.Time's String shows), so that durations measured from it
// ignore wall-clock steps; zero is "never".
func TestInstantsRoundTripOnTheMonotonicClock(t *testing.T) {
	now := time.Now()
	if !strings.Contains(now.String(), "m=") {
		t.Skip("this platform's time.Now has no monotonic reading")
	}
	n := Of(now)
	if n <= 0 {
		t.Fatalf("Of(now) = %d, want positive", n)
	}
	got := Time(n)
	if got.Sub(now) != 0 || !got.Equal(now) {
		t.Errorf("Time(Of(now)) = %v, want %v", got, now)
	}
	if !strings.Contains(got.String(), "m=") {
		t.Errorf("Time(Of(now)) = %v, without a monotonic reading", got)
	}
	if later := Of(now.Add(time.Hour)); later-n != int64(time.Hour) {
		t.Errorf("an hour later is %d ns later, want %d", later-n, int64(time.Hour))
	}
	if !Time(0).IsZero() {
		t.Errorf("Time(0) = %v, want the zero time", Time(0))
	}
	if Now() < n {
		t.Errorf("Now() = %d, before an instant taken earlier (%d)", Now(), n)
	}
}
