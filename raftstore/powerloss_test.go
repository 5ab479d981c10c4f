package raftstore

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/internal/testwait"
)

// TestPowerLossOfTheLeaderLosesNoAcknowledgedWrite: raft commits a write
// with the leader's copy, still being fsynced, and one follower's (f1);
// the other follower (f2) has received it but not fsynced it. Power is
// lost on the leader and f2 while f1 is cut off from the network: the
// write is gone from both disks. The two start again from what their
// disks hold, elect a leader without f1 and take a write of their own at
// the lost write's place in the log; then f1 comes back and its copy is
// replaced. The lost write must not have been acknowledged, and every
// replica, f1 included (it kept running), must end in the same state:
// f1 must not have applied a write the cluster then lost.
func TestPowerLossOfTheLeaderLosesNoAcknowledgedWrite(t *testing.T) {
	disks := make([]*holdDisk, 3)
	layers := make([]*cuttableLayer, 3)
	cfgs := make([]Config, 3)
	stores := openCluster(t, 3, func(i int, cfg *Config) {
		disks[i] = newHoldDisk()
		cfg.logFS = disks[i]
		layers[i] = newCuttableLayer(t)
		cfg.StreamLayer = layers[i]
		// No election while fsyncs are held on a loaded machine.
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = time.Second, time.Second, 500*time.Millisecond
		cfgs[i] = *cfg
	})
	// Runs before the stores' Close: a test that fails with fsyncs held
	// does not hang there.
	t.Cleanup(func() {
		for _, d := range disks {
			d.release()
		}
	})
	leader := leaderOf(t, stores)
	l, f1, f2 := -1, -1, -1
	for i, s := range stores {
		switch {
		case s == leader:
			l = i
		case f1 < 0:
			f1 = i
		default:
			f2 = i
		}
	}
	for _, id := range []string{"a", "b", "c"} {
		mustStoreApply(t, leader, registerCmd(testInstance("api", id, "n1")))
	}
	testwait.For(t, 10*time.Second, "every replica applies the first writes", func() bool {
		for _, s := range stores {
			if s.FSM().Revision() < leader.FSM().Revision() {
				return false
			}
		}
		return true
	})

	heldLeader, heldF2 := disks[l].arm(), disks[f2].arm()
	write := async(func() error {
		_, err := leader.Apply(t.Context(), registerCmd(testInstance("api", "lost", "n1")))
		return err
	})
	recvWithin(t, heldLeader, "the leader's fsync of the write")
	recvWithin(t, heldF2, "f2's fsync of the write")
	idx, err := leader.logs.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "raft commits the write with f1's copy", func() bool {
		last, _ := stores[f1].logs.LastIndex()
		return last >= idx && leader.raft.CommitIndex() >= idx
	})
	// Long enough for raft to tell f1 its commit index several times over
	// (and for the write to be answered, were it answered too early).
	var answer error
	answered := false
	select {
	case answer = <-write:
		answered = true
	case <-time.After(3 * leader.cfg.CommitTimeout):
	}
	if !leader.IsLeader() {
		t.Fatal("leadership moved while the fsyncs were held; the test is void")
	}

	layers[f1].setCut(true)
	for _, i := range []int{l, f2} {
		disks[i].powerOff(t)
		stores[i].Close()
	}
	if !answered {
		answer = recvWithin(t, write, "the write")
	}
	acked := answer == nil
	for _, i := range []int{l, f2} {
		cfg := cfgs[i]
		cfg.Bootstrap = false
		disks[i] = newHoldDisk()
		cfg.logFS = disks[i]
		layers[i] = cuttableLayerAt(t, cfgs[i].StreamLayer.Addr().String())
		cfg.StreamLayer = layers[i]
		stores[i] = New(cfg)
		if err := stores[i].Open(); err != nil {
			t.Fatalf("restart %s after the power loss: %v", cfg.NodeID, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	pair := []*Store{stores[l], stores[f2]}
	applyThroughLeader(t, pair, registerCmd(testInstance("api", "after", "n2")))

	layers[f1].setCut(false)
	var want uint64
	for _, s := range pair {
		if s.IsLeader() {
			want = s.FSM().Revision()
		}
	}
	// The leader's revision may still move on after want (the no-op of a
	// new term): wait until every replica is at the same revision, want
	// or later.
	testwait.For(t, 20*time.Second, "f1 catches up with the leader the two elected", func() bool {
		first := stores[0].FSM().Revision()
		for _, s := range stores {
			if rev := s.FSM().Revision(); rev < want || rev != first {
				return false
			}
		}
		return true
	})
	states := make([]registryState, 3)
	for i, s := range stores {
		states[i] = stateOf(s.FSM())
	}
	for i := range stores {
		if d := diffStates(states[l], states[i]); d != "" {
			t.Errorf("%s's state differs from the restarted leader's:\n%s", stores[i].cfg.NodeID, d)
		}
	}
	lost := true
	for _, in := range states[l].instances {
		if in.GetId() == "lost" {
			lost = false
		}
	}
	if acked && lost {
		t.Fatal("a write was acknowledged and then lost with the leader's disk")
	}
	t.Logf("the write at index %d: acknowledged %v, kept %v", idx, acked, !lost)
	if stores[f1].raft.State() == raft.Shutdown {
		t.Fatal("f1 stopped")
	}
}
