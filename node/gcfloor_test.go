package node

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/testwait"
)

func TestGCPercentKeepsASmallHeapCollectingAtTheFloor(t *testing.T) {
	for _, tc := range []struct {
		live, floor uint64
		want        int
	}{
		{0, 64 << 20, 100},        // before the first cycle
		{8 << 20, 64 << 20, 700},  // next cycle at 8 + 56 = 64 MiB
		{16 << 20, 64 << 20, 300}, // at 64 MiB
		{32 << 20, 64 << 20, 100}, // twice live is the floor already
		{1 << 30, 64 << 20, 100},  // a large heap as GOGC=100
	} {
		if got := gcPercentFor(tc.live, tc.floor); got != tc.want {
			t.Errorf("live %d MiB, floor %d MiB: GOGC %d, want %d", tc.live>>20, tc.floor>>20, got, tc.want)
		}
	}
}

// gcPercent reads GOGC without changing it.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// After each cycle the floor sets GOGC from the live heap; once stopped
// it leaves GOGC alone.
func TestGCFloorSetsGOGCAfterEveryCycle(t *testing.T) {
	defer debug.SetGCPercent(gcPercent())
	runtime.GC()
	live := liveHeap()
	g := &gcFloor{floor: 64 * live}
	g.arm()
	defer g.stopped.Store(true)
	debug.SetGCPercent(100) // as if something had reset it
	testwait.For(t, 10*time.Second, "GOGC set from the live heap after a cycle", func() bool {
		runtime.GC()
		return gcPercent() > 1000
	})
	g.stopped.Store(true)
	runtime.GC()
	runtime.GC() // the last armed cleanup has run and armed nothing
	debug.SetGCPercent(100)
	runtime.GC()
	runtime.GC()
	if p := gcPercent(); p != 100 {
		t.Fatalf("GOGC %d after the floor stopped, want it left at 100", p)
	}
}
