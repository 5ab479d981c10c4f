package raftstore

import (
	"time"

	"github.com/zrpcio/zrpc/internal/monotime"
)

// Times this package keeps in atomics (when a peer was last heard, until
// when votes are held, ...) are monotonic instants (internal/monotime),
// not the wall clock's UnixNano: the durations measured from them (how
// long a peer has been silent, whether a hold has ended) must not move
// when NTP or a resumed VM steps the wall clock. Zero stays "never".

func monoNanos(t time.Time) int64 { return monotime.Of(t) }
func monoNow() int64              { return monotime.Now() }
func monoTime(n int64) time.Time  { return monotime.Time(n) }
