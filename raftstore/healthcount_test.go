package raftstore

import (
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// TestHealthCountsReadCountersNotInstances: HealthCounts answers while an
// apply holds the FSM's lock (so it cannot be walking the instances), and
// its counts follow registrations, health changes and removals.
func TestHealthCountsReadCountersNotInstances(t *testing.T) {
	d := newFSMDriver(t, 64)
	for _, id := range []string{"a", "b", "c"} {
		d.mustApply(registerCmd(testInstance("svc", id, "n1")))
	}
	d.mustApply(setHealthCmd(pb.Health_CRITICAL, "down", instRef("svc", "a")))
	d.mustApply(deregisterCmd("svc", "b"))

	d.fsm.mu.Lock() // an apply in progress: the instance maps may not be read
	got := make(chan map[pb.Health]int, 1)
	go func() { got <- d.fsm.HealthCounts() }()
	select {
	case counts := <-got:
		if counts[pb.Health_PASSING] != 1 || counts[pb.Health_CRITICAL] != 1 || len(counts) != 2 {
			t.Errorf("HealthCounts() = %v, want 1 passing and 1 critical", counts)
		}
	case <-time.After(10 * time.Second):
		t.Error("HealthCounts waited for the apply to finish: it reads the instances")
	}
	d.fsm.mu.Unlock()
}
