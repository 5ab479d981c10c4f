// Package testwait is how zrpc's tests wait for a condition: they poll it
// until it holds, with a deadline, and fail saying what they awaited. It
// never asserts how long the wait took (benchmarks measure that).
package testwait

import (
	"testing"
	"time"
)

// Polling starts fast, so a condition that holds soon is seen soon, and
// slows down to maxInterval, so a long wait does not keep a loaded
// machine busy.
const (
	minInterval = time.Millisecond
	maxInterval = 20 * time.Millisecond
)

// For polls cond until it holds. When timeout passes first, it fails t
// with "timed out after <timeout> waiting for <what>". Call it from the
// test's goroutine.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ForExplained(t, timeout, what, cond, nil)
}

// ForExplained is For whose failure message ends with explain()'s text,
// asked for once at the deadline (what the test saw instead). A nil
// explain adds nothing.
func ForExplained(t testing.TB, timeout time.Duration, what string, cond func() bool, explain func() string) {
	t.Helper()
	if !Until(timeout, cond) {
		var more string
		if explain != nil {
			more = explain()
		}
		t.Fatalf("timed out after %s waiting for %s%s", timeout, what, more)
	}
}

// Until polls cond until it holds and reports true, or reports false once
// timeout has passed. Between two polls it waits at least as long as cond
// took, so a costly condition (one that runs a process) is not polled back
// to back.
func Until(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	interval := minInterval
	for {
		start := time.Now()
		if cond() {
			return true
		}
		took := time.Since(start)
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(max(interval, took))
		interval = min(2*interval, maxInterval)
	}
}
