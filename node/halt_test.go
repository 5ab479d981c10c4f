package node

import (
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/teststack"
)

// goroutinesRunning counts this process's goroutines whose stack holds fn.
func goroutinesRunning(fn string) int { return len(teststack.Goroutines("", fn)) }

// TestHaltStopsTheBlobStoresLoops: a halted agent (testcluster's kill)
// stops its scrubber and orphan collector, as a crashed process would;
// before, they went on reading the data dir the agent's next run used.
func TestHaltStopsTheBlobStoresLoops(t *testing.T) {
	const scrub, collect = "storage.(*Store).scrub(", "storage.(*Store).collectOrphans("
	before := goroutinesRunning(scrub) + goroutinesRunning(collect)
	cfg := testConfig(t)
	cfg.BlobScrubInterval = 50 * time.Millisecond
	n := startNode(t, cfg)
	if got := goroutinesRunning(scrub) + goroutinesRunning(collect); got != before+2 {
		t.Fatalf("a running agent has %d scrubber and collector goroutines, want 2 (test process: %d before it)", got-before, before)
	}
	n.Halt()
	waitFor(t, 10*time.Second, "the halted agent's scrubber and collector to end", func() bool {
		return goroutinesRunning(scrub)+goroutinesRunning(collect) == before
	})
}

// TestHaltStopsTheStallDetector: a halted agent stops the goroutine that
// watches for stalls of the process, as Close does; left running, every
// agent a test process kills and restarts kept one waking ten times a
// second.
func TestHaltStopsTheStallDetector(t *testing.T) {
	const detector = "stall.(*Detector).run("
	before := goroutinesRunning(detector)
	n := startNode(t, testConfig(t))
	if got := goroutinesRunning(detector); got != before+1 {
		t.Fatalf("a running agent has %d stall detector goroutines, want 1 (test process: %d before it)", got-before, before)
	}
	n.Halt()
	waitFor(t, 10*time.Second, "the halted agent's stall detector to end", func() bool {
		return goroutinesRunning(detector) == before
	})
}
