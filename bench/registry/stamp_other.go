//go:build !linux

package registry

import "time"

// stampNow returns the time, in nanoseconds, that a write's stamp carries
// and that its event's arrival is compared with. Outside Linux there is
// no monotonic clock shared by every process that this package reads, so
// it falls back to the wall clock: a step of it (NTP, an operator) during
// a round is added to the latencies measured across it.
func stampNow() int64 { return time.Now().UnixNano() }
