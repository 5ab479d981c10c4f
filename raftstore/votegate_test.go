package raftstore

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/internal/monotime"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// cutCluster is a three-store cluster on cuttable stream layers, its
// leader l and followers f1, f2, for the vote gate's tests.
type cutCluster struct {
	t         *testing.T
	layers    []*cuttableLayer
	cfgs      []Config
	stores    []*Store
	l, f1, f2 int
}

func newCutCluster(t *testing.T, configure func(cfg *Config)) *cutCluster {
	c := &cutCluster{t: t, layers: make([]*cuttableLayer, 3), cfgs: make([]Config, 3)}
	c.stores = openCluster(t, 3, func(i int, cfg *Config) {
		c.layers[i] = newCuttableLayer(t)
		cfg.StreamLayer = c.layers[i]
		if configure != nil {
			configure(cfg)
		}
		c.cfgs[i] = *cfg
	})
	leader := leaderOf(t, c.stores)
	c.l, c.f1, c.f2 = -1, -1, -1
	for i, s := range c.stores {
		switch {
		case s == leader:
			c.l = i
		case c.f1 < 0:
			c.f1 = i
		default:
			c.f2 = i
		}
	}
	// A follower still applying the cluster's first entries when a test
	// cuts it off would apply them after the cut, as if it had not been.
	testwait.For(t, 20*time.Second, "every replica has applied the leader's entries", func() bool {
		for _, s := range c.stores {
			if s.FSM().Revision() != leader.FSM().Revision() {
				return false
			}
		}
		return true
	})
	return c
}

// restart opens store i again at its address on dir (its own, or an empty
// one: a replaced disk), its log wrapped by wrap when not nil.
func (c *cutCluster) restart(i int, dir string, wrap func(raft.LogStore) raft.LogStore) *Store {
	c.t.Helper()
	cfg := c.cfgs[i]
	cfg.Bootstrap = false
	cfg.Dir = dir
	cfg.WrapLogStore = wrap
	c.layers[i] = cuttableLayerAt(c.t, c.cfgs[i].StreamLayer.Addr().String())
	cfg.StreamLayer = c.layers[i]
	s := New(cfg)
	if err := s.Open(); err != nil {
		c.t.Fatalf("restart %s: %v", cfg.NodeID, err)
	}
	c.t.Cleanup(func() { s.Close() })
	c.stores[i] = s
	return s
}

// refusedAndLeaderless waits until the wiped voter has refused the
// lagging f2's vote requests n times, then checks that neither leads.
func (c *cutCluster) refusedAndLeaderless(wiped *Store, n uint64) {
	c.t.Helper()
	testwait.For(c.t, 20*time.Second, "the wiped voter refuses the lagging candidate's vote requests", func() bool {
		return wiped.transport.votes.refused.Load() >= n
	})
	for _, s := range []*Store{c.stores[c.f2], wiped} {
		if s.IsLeader() {
			c.t.Fatalf("%s leads with a log that lacks acknowledged writes", s.cfg.NodeID)
		}
	}
}

// leaderBack restarts the old leader from its disk and waits until every
// replica, the wiped one too, has applied revision acked.
func (c *cutCluster) leaderBack(acked uint64, within time.Duration) {
	c.t.Helper()
	c.restart(c.l, c.cfgs[c.l].Dir, nil)
	testwait.For(c.t, within, "every replica, the wiped one too, has the acknowledged writes", func() bool {
		for _, s := range c.stores {
			if s.FSM().Revision() < acked {
				return false
			}
		}
		return true
	})
}

// TestWipedVoterDoesNotElectALaggingCandidate: writes are committed by
// the leader and f1 while f2 is cut off. The leader dies, f1 comes back
// with an empty data dir (a replaced disk) under its old name and
// address, and f2's partition heals. f2, whose log lacks the writes,
// asks f1 for its vote: f1 must refuse it (it cannot tell what the
// cluster acknowledged), so f2 cannot lead and overwrite the writes.
// When the old leader returns from its disk, it leads again, and f1
// catches up with every write.
func TestWipedVoterDoesNotElectALaggingCandidate(t *testing.T) {
	c := newCutCluster(t, nil)
	stores, leader, l, f1, f2 := c.stores, c.stores[c.l], c.l, c.f1, c.f2
	lagging := stores[f2].FSM().Revision()
	c.layers[f2].setCut(true)
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
	wiped := c.restart(f1, t.TempDir(), nil)
	c.layers[f2].setCut(false)

	c.refusedAndLeaderless(wiped, 3)
	c.leaderBack(acked, 20*time.Second)
	for _, id := range []string{"a", "b", "c"} {
		if !wiped.FSM().stored("api", id).valid() {
			t.Errorf("instance api/%s lost", id)
		}
	}
}

// TestPartlyCaughtUpWipedVoterDoesNotElectALaggingCandidate: as above,
// but the wiped voter has received part of the log when the leader dies,
// less than the lagging candidate holds. Raft alone would compare the
// candidate's log with that part and grant the vote; the gate refuses
// it, as the leader has told the wiped voter a commit index beyond the
// candidate's log.
func TestPartlyCaughtUpWipedVoterDoesNotElectALaggingCandidate(t *testing.T) {
	// The leader must keep its lead while the wiped voter restarts with
	// the laggard cut off: were it to step down then, neither could vote
	// for it, and the wiped voter would never get the log.
	c := newCutCluster(t, func(cfg *Config) {
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 2*time.Second, 2*time.Second, 2*time.Second
	})
	stores, leader, l, f1, f2 := c.stores, c.stores[c.l], c.l, c.f1, c.f2
	// Several of raft's batches (256 entries) that every replica has,
	// then writes the lagging f2 misses.
	write := func(prefix string, n int) {
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := w; i < n; i += 8 {
					mustStoreApply(t, leader, registerCmd(testInstance("api", fmt.Sprintf("%s-%d", prefix, i), "n1")))
				}
			})
		}
		wg.Wait()
	}
	write("all", 1200)
	testwait.For(t, 20*time.Second, "every replica has the first writes", func() bool {
		return stores[f2].FSM().Revision() == leader.FSM().Revision()
	})
	c.layers[f2].setCut(true)
	write("acked", 300)
	acked := leader.FSM().Revision()
	lagging, err := stores[f2].logs.LastIndex()
	if err != nil {
		t.Fatal(err)
	}

	// f1's disk is replaced while the leader lives; its new log takes
	// raft's first batch and holds the second until the leader is gone.
	stores[f1].Close()
	hold := make(chan struct{})
	wiped := c.restart(f1, t.TempDir(), func(s raft.LogStore) raft.LogStore { return holdingLog{s, 256, hold} })
	testwait.For(t, 30*time.Second, "the wiped voter has raft's first batch of the log", func() bool {
		last, err := wiped.logs.LastIndex()
		return err == nil && last > bootstrapIndex
	})
	c.layers[l].setCut(true)
	close(hold)
	stores[l].Close()
	if last, _ := wiped.logs.LastIndex(); last >= lagging {
		t.Fatalf("the wiped voter's log reaches %d, the lagging one's %d: the test is void", last, lagging)
	}
	c.layers[f2].setCut(false)

	c.refusedAndLeaderless(wiped, 2)
	c.leaderBack(acked, 30*time.Second)
}

// holdingLog holds the appends of a Raft log store that go past index
// upTo until release is closed, as a replaced disk still filling would.
type holdingLog struct {
	raft.LogStore
	upTo    uint64
	release <-chan struct{}
}

func (h holdingLog) StoreLogs(logs []*raft.Log) error {
	if len(logs) > 0 && logs[len(logs)-1].Index > h.upTo {
		<-h.release
	}
	return h.LogStore.StoreLogs(logs)
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

	// A leader has said index 20 is committed: candidates whose logs end
	// before it are refused, state or not; the others go to raft.
	g.committed = func() uint64 { return 20 }
	for _, rpc := range []raft.RPC{vote(19), vote(bootstrapIndex),
		{Command: &raft.RequestPreVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte("n2")}, LastLogIndex: 19}}} {
		if err := g.refuse(rpc); !errors.Is(err, errBehindCommit) {
			t.Errorf("%T from a candidate behind the commit index: %v, want %v", rpc.Command, err, errBehindCommit)
		}
	}
	if err := g.refuse(vote(20)); err != nil {
		t.Errorf("vote from a candidate at the commit index: %v, want it passed", err)
	}
}

// TestVoteGateHoldsVotesAndLearnsTheCommitIndexFromPeers: a restarted
// replica refuses every vote while held, AppendEntries still pass; the
// commit index its peers tell it of refuses candidates behind it, and a
// lower one told later does not lower it.
func TestVoteGateHoldsVotesAndLearnsTheCommitIndexFromPeers(t *testing.T) {
	g := &voteGate{log: NewHCLog(testLogger(t, 0), "raft"), hasState: func() (bool, error) { return true, nil }}
	g.committed = func() uint64 { return 20 }
	vote := func(last uint64) raft.RPC {
		return raft.RPC{Command: &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte("n2")}, LastLogIndex: last}}
	}
	g.heldUntil.Store(monotime.Of(time.Now().Add(time.Hour)))
	if err := g.refuse(vote(99)); !errors.Is(err, errVotesHeld) {
		t.Errorf("vote while held: %v, want %v", err, errVotesHeld)
	}
	if err := g.refuse(raft.RPC{Command: &raft.AppendEntriesRequest{PrevLogEntry: 9}}); err != nil {
		t.Errorf("AppendEntries while votes are held: %v, want it passed", err)
	}
	g.heldUntil.Store(monotime.Of(time.Now().Add(-time.Millisecond)))
	if err := g.refuse(vote(99)); err != nil {
		t.Errorf("vote once the hold has passed: %v, want it passed", err)
	}
	g.learn(30)
	g.learn(10)
	if err := g.refuse(vote(29)); !errors.Is(err, errBehindCommit) {
		t.Errorf("vote from a candidate behind the commit index peers told of: %v, want %v", err, errBehindCommit)
	}
	if err := g.refuse(vote(30)); err != nil {
		t.Errorf("vote from a candidate at the commit index peers told of: %v, want it passed", err)
	}
	if got := g.commitIndex(); got != 30 {
		t.Errorf("commit index %d, want 30 (the highest told)", got)
	}
}
