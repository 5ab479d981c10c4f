package raftstore

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/internal/testwait"
)

// TestWipedVoterDoesNotElectALaggingCandidate: writes are committed by
// the leader and f1 while f2 is cut off. The leader dies, f1 comes back
// with an empty data dir (a replaced disk) under its old name and
// address, and f2's partition heals. f2, whose log lacks the writes,
// asks f1 for its vote: f1 must refuse it (it cannot tell what the
// cluster acknowledged), so f2 cannot lead and overwrite the writes.
// When the old leader returns from its disk, it leads again, and f1
// catches up with every write.
func TestWipedVoterDoesNotElectALaggingCandidate(t *testing.T) {
	layers := make([]*cuttableLayer, 3)
	cfgs := make([]Config, 3)
	stores := openCluster(t, 3, func(i int, cfg *Config) {
		layers[i] = newCuttableLayer(t)
		cfg.StreamLayer = layers[i]
		cfgs[i] = *cfg
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
	lagging := stores[f2].FSM().Revision()
	layers[f2].setCut(true)
	for _, id := range []string{"a", "b", "c"} {
		mustStoreApply(t, leader, registerCmd(testInstance("api", id, "n1")))
	}
	acked := leader.FSM().Revision()
	if stores[f2].FSM().Revision() != lagging {
		t.Fatal("the cut-off follower applied the writes; the test is void")
	}

	// The leader dies; f1's disk is replaced.
	stores[l].Close()
	stores[f1].Close()
	restart := func(i int, dir string) {
		cfg := cfgs[i]
		cfg.Bootstrap = false
		cfg.Dir = dir
		layers[i] = cuttableLayerAt(t, cfgs[i].StreamLayer.Addr().String())
		cfg.StreamLayer = layers[i]
		stores[i] = New(cfg)
		if err := stores[i].Open(); err != nil {
			t.Fatalf("restart %s: %v", cfg.NodeID, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	restart(f1, t.TempDir())
	wiped := stores[f1]
	layers[f2].setCut(false)

	testwait.For(t, 20*time.Second, "the wiped voter refuses the lagging candidate's vote requests", func() bool {
		return wiped.transport.votes.refused.Load() >= 3
	})
	for _, s := range []*Store{stores[f2], wiped} {
		if s.IsLeader() {
			t.Fatalf("%s leads with a log that lacks acknowledged writes", s.cfg.NodeID)
		}
	}

	restart(l, cfgs[l].Dir)
	testwait.For(t, 20*time.Second, "every replica, the wiped one too, has the acknowledged writes", func() bool {
		for _, s := range stores {
			if s.FSM().Revision() < acked {
				return false
			}
		}
		return true
	})
	for _, id := range []string{"a", "b", "c"} {
		if !wiped.FSM().stored("api", id).valid() {
			t.Errorf("instance api/%s lost", id)
		}
	}
}

// TestVoteGate: a replica with no state refuses vote and pre-vote
// requests from candidates whose log goes past the bootstrap
// configuration, passes the others, and passes everything once it has
// state.
func TestVoteGate(t *testing.T) {
	has := false
	g := &voteGate{log: NewHCLog(testLogger(t, 0), "raft"), hasState: func() (bool, error) { return has, nil }}
	vote := func(last uint64) raft.RPC {
		return raft.RPC{Command: &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte("n2")}, LastLogIndex: last}}
	}
	preVote := raft.RPC{Command: &raft.RequestPreVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte("n2")}, LastLogIndex: 9}}
	appendReq := raft.RPC{Command: &raft.AppendEntriesRequest{PrevLogEntry: 9}}

	if err := g.refuse(vote(9)); !errors.Is(err, errNoStateNoVote) {
		t.Errorf("vote from a candidate at index 9, no state: %v, want %v", err, errNoStateNoVote)
	}
	if err := g.refuse(preVote); !errors.Is(err, errNoStateNoVote) {
		t.Errorf("pre-vote from a candidate at index 9, no state: %v, want %v", err, errNoStateNoVote)
	}
	if err := g.refuse(vote(bootstrapIndex)); err != nil {
		t.Errorf("vote from a candidate with only the bootstrap configuration: %v, want it passed", err)
	}
	if err := g.refuse(appendReq); err != nil {
		t.Errorf("AppendEntries: %v, want it passed", err)
	}
	has = true
	if err := g.refuse(vote(9)); err != nil {
		t.Errorf("vote once the replica has state: %v, want it passed", err)
	}
	has = false // state never goes away once seen: the gate remembers it
	if err := g.refuse(vote(9)); err != nil {
		t.Errorf("vote after state was seen once: %v, want it passed", err)
	}
	if got := g.refused.Load(); got != 2 {
		t.Errorf("refused count %d, want 2", got)
	}
	var none *voteGate
	if err := none.refuse(vote(9)); err != nil {
		t.Errorf("no gate: %v, want every request passed", err)
	}
}
