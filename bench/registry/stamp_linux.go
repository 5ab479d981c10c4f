package registry

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// stampNow returns the time, in nanoseconds, that a write's stamp carries
// and that its event's arrival is compared with: CLOCK_MONOTONIC. On
// Linux it is one clock for every process of the machine (of one time
// namespace, and the benchmark makes no other), so a stamp taken by a
// writer in one process can be compared with the arrival a watcher in
// another notes; and it never steps, where the wall clock jumps when NTP
// or an operator sets it and a latency measured across the jump is off by
// all of it. Its values count from boot: they are not dates.
func stampNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		// The Go runtime itself keeps time by this clock: it does not fail.
		panic(fmt.Sprintf("read CLOCK_MONOTONIC: %v", err))
	}
	return ts.Nano()
}
