package raftstore

import "time"

// Times this package keeps in atomics (when a peer was last heard, until
// when votes are held, ...) are nanoseconds on the monotonic clock since
// the process loaded the package, not the wall clock's UnixNano: the
// durations measured from them (how long a peer has been silent, whether
// a hold has ended) must not move when NTP or a resumed VM steps the
// wall clock. Zero stays "never".
var monoStart = time.Now()

// monoNanos is t as such nanoseconds; t must carry a monotonic reading
// (time.Now() and what is computed from it do).
func monoNanos(t time.Time) int64 { return max(int64(t.Sub(monoStart)), 0) + 1 }

// monoNow is monoNanos(time.Now()).
func monoNow() int64 { return monoNanos(time.Now()) }

// monoTime is the time monoNanos returned n for, with its monotonic
// reading; zero for zero.
func monoTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return monoStart.Add(time.Duration(n - 1))
}
