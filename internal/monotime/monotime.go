// Package monotime keeps instants in an int64, for atomics, on the
// monotonic clock: nanoseconds since the process loaded the package. The
// durations between such instants, and between them and time.Now, do not
// move when NTP or a resumed VM steps the wall clock, as those between
// UnixNano values do: a backward step of an hour would keep a deadline
// stored as UnixNano an hour in the future.
//
// Every instant after the package loaded is positive, so zero can stand
// for "never".
package monotime

import "time"

var start = time.Now()

// Of returns t as an instant. t must carry a monotonic reading (time.Now
// and the times computed from it with Add do); one without (a parsed or
// stored time, a test's fake clock) is placed by its wall clock, which is
// consistent among such times only.
func Of(t time.Time) int64 { return int64(t.Sub(start)) }

// Now is Of(time.Now()): always positive.
func Now() int64 { return Of(time.Now()) }

// Time returns instant n as a time.Time with a monotonic reading; zero for
// zero.
func Time(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return start.Add(time.Duration(n))
}
