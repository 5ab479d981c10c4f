package testwait

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestForReturnsOnceTheConditionHolds: For polls until the condition holds.
func TestForReturnsOnceTheConditionHolds(t *testing.T) {
	var polls atomic.Int64
	For(t, 10*time.Second, "the third poll", func() bool { return polls.Add(1) >= 3 })
	if n := polls.Load(); n != 3 {
		t.Fatalf("polled %d times, want 3", n)
	}
}

// TestForFailsSayingWhatItAwaited: at the deadline the test fails with what
// was awaited, the timeout and the explanation.
func TestForFailsSayingWhatItAwaited(t *testing.T) {
	rec := &recorder{TB: t}
	ForExplained(rec, 30*time.Millisecond, "a leader", func() bool { return false }, func() string { return " (term 7, no votes)" })
	if want := "timed out after 30ms waiting for a leader (term 7, no votes)"; rec.failed != want {
		t.Fatalf("failure = %q, want %q", rec.failed, want)
	}
	if Until(10*time.Millisecond, func() bool { return false }) {
		t.Fatal("Until reported a condition that never held")
	}
}

// recorder takes a failure instead of ending the test.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = strings.TrimSpace(fmt.Sprintf(format, args...))
}
