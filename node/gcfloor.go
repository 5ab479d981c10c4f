package node

import (
	"os"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"sync/atomic"
)

// gcFloorBytes is the heap below which the collector runs no more often
// than it would for a heap of this size. The collector starts a cycle once
// the heap has grown by GOGC percent (100) of what was live after the
// last one, so an agent whose live heap is small collects often: with
// 10,000 watches on WatchMany streams (about 12 MiB live) it collected
// every few seconds while it fanned events out, and each cycle delayed
// the events in flight (p99 2.5 ms against 1.9 ms with the same agent
// collecting less often, docs/benchmarks.md). Raising GOGC while the live
// heap is under half the floor lets the heap grow to the floor before the
// next cycle: at most this much memory, traded for fewer cycles, as
// GC tuners in large Go services do. A live heap above half the floor is
// collected as GOGC=100 collects it, and the soft memory limit
// (memory_limit) still bounds the heap whatever GOGC is.
const gcFloorBytes = 64 << 20

// gcPercentFor is the GOGC that makes the next cycle start once the heap
// reaches floor, or at twice live when that is more.
func gcPercentFor(live, floor uint64) int {
	if live == 0 || 2*live >= floor {
		return 100
	}
	return int(floor*100/live) - 100
}

// ApplyGCFloor keeps the collector of a process with a small heap from
// running more often than a heap of gcFloorBytes needs (see gcFloorBytes),
// unless GOGC is set, which it leaves to the operator. It sets GOGC after
// every cycle from the live heap, for the life of the process; the agent's
// binary calls it once (it changes the whole process). It returns what it
// did, for the start-up log.
func ApplyGCFloor() string {
	if v, ok := os.LookupEnv("GOGC"); ok && v != "" {
		return "GOGC=" + v + " (set by the environment)"
	}
	(&gcFloor{floor: gcFloorBytes}).arm()
	return "GOGC=100 above a live heap of 32 MiB, collecting at 64 MiB below it"
}

// gcFloor sets GOGC from the live heap after every cycle until stopped.
type gcFloor struct {
	floor   uint64
	stopped atomic.Bool
}

// arm sets GOGC from the live heap now and again after the next cycle: a
// sentinel object's cleanup runs once a cycle has found it unreachable,
// and arms a new sentinel. (The sentinel is too large for the tiny
// allocator, which would tie it to its neighbours' lives.)
func (g *gcFloor) arm() {
	if g.stopped.Load() {
		return
	}
	debug.SetGCPercent(gcPercentFor(liveHeap(), g.floor))
	runtime.AddCleanup(new([64]byte), (*gcFloor).arm, g)
}

// liveHeap is the heap the last cycle found live (0 before the first).
func liveHeap() uint64 {
	s := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
