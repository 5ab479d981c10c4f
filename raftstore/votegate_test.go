package raftstore

import (
	"context"
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
	c, wiped, _, acked := newPartlyCaughtUp(t)
	c.refusedAndLeaderless(wiped, 2)
	c.leaderBack(acked, 30*time.Second)
}

// TestRestartedPartlyCaughtUpWipedVoterDoesNotElectALaggingCandidate: as
// above, and the wiped voter is restarted (a crash, a SIGTERM) from the
// part of the log it has. It opens with Raft state, and no peer it can
// reach knows the writes were committed: what the leader told it before
// the restart must still refuse the lagging candidate.
func TestRestartedPartlyCaughtUpWipedVoterDoesNotElectALaggingCandidate(t *testing.T) {
	c, wiped, dir, acked := newPartlyCaughtUp(t)
	wiped.Close()
	restarted := c.restart(c.f1, dir, nil)
	if !restarted.HadState() {
		t.Fatal("the restarted voter has no Raft state: the test is void")
	}
	c.refusedAndLeaderless(restarted, 2)
	c.leaderBack(acked, 30*time.Second)
}

// TestPartlyCaughtUpWipedVoterDoesNotElectALaggardWithAStaleTail: the
// laggard led a term of its own while cut off and wrote a tail no one
// else received, longer than what the others then committed without it
// in a later term. The wiped voter has part of the log, of the first
// term only: raft would grant the laggard its vote (a later last term),
// and the laggard's log goes past the commit index the leader sent; the
// term of the committed entry the leader named refuses it.
func TestPartlyCaughtUpWipedVoterDoesNotElectALaggardWithAStaleTail(t *testing.T) {
	c := newCutCluster(t, func(cfg *Config) {
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 2*time.Second, 2*time.Second, 2*time.Second
	})
	stores := c.stores
	write := func(s *Store, prefix string, n int) {
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := w; i < n; i += 8 {
					mustStoreApply(t, s, registerCmd(testInstance("api", fmt.Sprintf("%s-%d", prefix, i), "n1")))
				}
			})
		}
		wg.Wait()
	}
	write(stores[c.l], "all", 600)
	testwait.For(t, 20*time.Second, "every replica has the first writes", func() bool {
		for _, s := range stores {
			if s.FSM().Revision() != stores[c.l].FSM().Revision() {
				return false
			}
		}
		return true
	})

	// The leader is cut off; one of the others, the laggard to be, leads
	// a new term, is cut off in turn and writes a tail alone.
	first := c.l
	c.layers[first].setCut(true)
	var laggard int
	testwait.For(t, 30*time.Second, "a follower leads once the leader is cut off", func() bool {
		for _, i := range []int{c.f1, c.f2} {
			if stores[i].IsLeader() {
				laggard = i
				return true
			}
		}
		return false
	})
	c.layers[laggard].setCut(true)
	tailFrom, err := stores[laggard].logs.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	var tail sync.WaitGroup
	for i := range 600 {
		tail.Go(func() { stores[laggard].Apply(ctx, registerCmd(testInstance("api", fmt.Sprintf("stale-%d", i), "n1"))) })
	}
	tail.Wait()
	staleEnd, err := stores[laggard].logs.LastIndex()
	if err != nil || staleEnd < tailFrom+500 {
		t.Fatalf("the laggard's tail ends at %d from %d (%v): the test is void", staleEnd, tailFrom, err)
	}

	// The first leader and the third agent elect a leader of a later term
	// and commit writes the laggard misses, fewer than its tail.
	c.layers[first].setCut(false)
	var leader *Store
	testwait.For(t, 30*time.Second, "a leader of the two others", func() bool {
		for i, s := range stores {
			if i != laggard && s.IsLeader() {
				leader, c.l = s, i
				return true
			}
		}
		return false
	})
	wipedAt := 3 - laggard - c.l // the agent neither leading nor lagging
	c.f1, c.f2 = wipedAt, laggard
	write(leader, "acked", 200)
	acked := leader.FSM().Revision()
	if last, _ := leader.logs.LastIndex(); last >= staleEnd {
		t.Fatalf("the committed log reaches %d, the laggard's stale tail %d: the test is void", last, staleEnd)
	}

	// The third agent's disk is replaced; it takes raft's first batch
	// (entries of the first term) before the leader dies.
	stores[wipedAt].Close()
	hold := make(chan struct{})
	wiped := c.restart(wipedAt, t.TempDir(), func(s raft.LogStore) raft.LogStore { return holdingLog{s, 256, hold} })
	testwait.For(t, 30*time.Second, "the wiped voter has raft's first batch of the log", func() bool {
		last, err := wiped.logs.LastIndex()
		return err == nil && last > bootstrapIndex
	})
	c.layers[c.l].setCut(true)
	close(hold)
	stores[c.l].Close()
	c.layers[laggard].setCut(false)

	c.refusedAndLeaderless(wiped, 2)
	c.leaderBack(acked, 30*time.Second)
}

// newPartlyCaughtUp: writes are committed by the leader and f1 while f2
// is cut off; f1's disk is then replaced and it receives part of the
// log, less than f2 holds, before the leader dies. f2's partition heals.
// It returns the cluster, the wiped f1 and its data dir, and the
// revision of the last acknowledged write.
func newPartlyCaughtUp(t *testing.T) (c *cutCluster, wiped *Store, dir string, acked uint64) {
	// The leader must keep its lead while the wiped voter restarts with
	// the laggard cut off: were it to step down then, neither could vote
	// for it, and the wiped voter would never get the log.
	c = newCutCluster(t, func(cfg *Config) {
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
	acked = leader.FSM().Revision()
	lagging, err := stores[f2].logs.LastIndex()
	if err != nil {
		t.Fatal(err)
	}

	// f1's disk is replaced while the leader lives; its new log takes
	// raft's first batch and holds the second until the leader is gone.
	stores[f1].Close()
	hold := make(chan struct{})
	dir = t.TempDir()
	wiped = c.restart(f1, dir, func(s raft.LogStore) raft.LogStore { return holdingLog{s, 256, hold} })
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
	return c, wiped, dir, acked
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

// failingStable is a stable store whose writes fail.
type failingStable struct{ raft.StableStore }

func (failingStable) SetUint64([]byte, uint64) error { return errors.New("disk gone") }

// TestVoteGateKeepsTheCommitIndexPastTheLog: the gate records the commit
// index it knew before a request that brings entries or a snapshot when
// the index lies past the log as it is or as the request leaves it, and
// only then; it refuses to pass a request whose index it could not
// record, clears the record once the replica has applied up to it, and a
// gate opened on the same stable store starts from the recorded index.
func TestVoteGateKeepsTheCommitIndexPastTheLog(t *testing.T) {
	stable := raft.NewInmemStore()
	var last, applied uint64
	newGate := func(s raft.StableStore) *voteGate {
		return &voteGate{log: NewHCLog(testLogger(t, 0), "raft"), hasState: func() (bool, error) { return true, nil },
			stable: s, lastIndex: func() (uint64, error) { return last, nil }, applied: func() uint64 { return applied }}
	}
	entries := func(from, to uint64) raft.RPC {
		req := &raft.AppendEntriesRequest{PrevLogEntry: from - 1}
		for i := from; i <= to; i++ {
			req.Entries = append(req.Entries, &raft.Log{Index: i})
		}
		return raft.RPC{Command: req}
	}
	kept := func() uint64 {
		v, err := stable.GetUint64(commitFloorKey)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	g := newGate(stable)
	for _, c := range []struct {
		name       string
		last, told uint64
		rpc        raft.RPC
		want       uint64
	}{
		{"a follower in step", 100, 100, entries(101, 110), 0},
		{"a slow follower: the index is its log's end", 100, 90, entries(101, 110), 0},
		{"a request without entries", 100, 500, raft.RPC{Command: &raft.AppendEntriesRequest{PrevLogEntry: 499, LeaderCommitIndex: 499}}, 0},
		{"a vote request", 100, 500, raft.RPC{Command: &raft.RequestVoteRequest{LastLogIndex: 600}}, 0},
		{"entries after a request that did not match", 100, 500, entries(101, 356), 500},
		{"more entries, the index already kept", 356, 500, entries(357, 612), 500},
		{"a conflicting tail cut off below the index", 600, 700, entries(201, 300), 700},
		{"a snapshot below the index", 0, 800, raft.RPC{Command: &raft.InstallSnapshotRequest{LastLogIndex: 750}}, 800},
		{"a snapshot and a log that reach the index", 900, 850, raft.RPC{Command: &raft.InstallSnapshotRequest{LastLogIndex: 900}}, 800},
	} {
		last = c.last
		if err := g.keep(c.rpc, committedEntry{index: c.told, term: 2}); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := kept(); got != c.want {
			t.Errorf("%s: kept %d, want %d", c.name, got, c.want)
		}
	}

	// A higher term of a committed entry is kept too, with the index.
	last = 0
	if err := g.keep(raft.RPC{Command: &raft.InstallSnapshotRequest{LastLogIndex: 750}}, committedEntry{index: 800, term: 3}); err != nil {
		t.Fatal(err)
	}
	if term, err := stable.GetUint64(commitFloorTermKey); err != nil || term != 3 || kept() != 800 {
		t.Errorf("kept index %d term %d (%v), want 800 and 3", kept(), term, err)
	}

	reopened := newGate(stable)
	if err := reopened.loadFloor(); err != nil {
		t.Fatal(err)
	}
	if got := reopened.committedEntry(); got != (committedEntry{800, 3}) {
		t.Errorf("committed after a restart %+v, want the kept index 800 and term 3", got)
	}
	for _, c := range []struct{ index, term uint64 }{{799, 3}, {900, 2}} {
		vote := raft.RPC{Command: &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte("n2")}, LastLogIndex: c.index, LastLogTerm: c.term}}
		if err := reopened.refuse(vote); !errors.Is(err, errBehindCommit) {
			t.Errorf("vote from a candidate whose log ends at index %d of term %d: %v, want %v", c.index, c.term, err, errBehindCommit)
		}
	}

	broken := newGate(failingStable{stable})
	last = 100
	if err := broken.keep(entries(101, 110), committedEntry{index: 900}); err == nil {
		t.Error("a request whose commit index could not be recorded was passed to raft")
	}

	applied = 799
	if err := reopened.keep(entries(901, 910), committedEntry{800, 3}); err != nil || kept() != 800 {
		t.Errorf("before the replica applied the kept index: %v, kept %d, want 800", err, kept())
	}
	applied = 800
	if err := reopened.keep(raft.RPC{Command: &raft.AppendEntriesRequest{PrevLogEntry: 910}}, committedEntry{800, 3}); err != nil || kept() != 0 {
		t.Errorf("once the replica applied the kept index: %v, kept %d, want it cleared", err, kept())
	}
	if term, _ := stable.GetUint64(commitFloorTermKey); term != 0 {
		t.Errorf("kept term %d once the replica applied the kept index, want it cleared", term)
	}
}

// TestVoteGateRefusesACandidateWhoseLogEndsBeforeACommittedEntrysTerm: a
// lagging voter may hold a tail that no leader committed (written while
// it led a term cut off from the others) that goes past the commit index
// while it lacks entries of a later term committed without it. A
// replica that has only part of the log, of older terms, would give it
// the vote on raft's comparison, and the commit index alone does not
// refuse it: the term of the committed entry a leader named does.
func TestVoteGateRefusesACandidateWhoseLogEndsBeforeACommittedEntrysTerm(t *testing.T) {
	var c leaderCommits
	// The new leader, of term 3, names entry 1500 of term 3 committed: a
	// request the wiped replica cannot match.
	c.observe(&raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 1500, PrevLogTerm: 3, LeaderCommitIndex: 1500}, time.Now())
	g := &voteGate{log: NewHCLog(testLogger(t, 0), "raft"), hasState: func() (bool, error) { return true, nil },
		committed: func() uint64 { commit, _ := c.last(); return commit }, committedTerm: c.lastTerm}
	stale := func(cmd any) raft.RPC { return raft.RPC{Command: cmd} }
	for _, rpc := range []raft.RPC{
		stale(&raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte("n3")}, LastLogIndex: 1600, LastLogTerm: 2}),
		stale(&raft.RequestPreVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte("n3")}, LastLogIndex: 1600, LastLogTerm: 2}),
	} {
		if err := g.refuse(rpc); !errors.Is(err, errBehindCommit) {
			t.Errorf("%T from a candidate whose log ends at 1600 in term 2: %v, want %v", rpc.Command, err, errBehindCommit)
		}
	}
	if err := g.refuse(stale(&raft.RequestVoteRequest{LastLogIndex: 1500, LastLogTerm: 3})); err != nil {
		t.Errorf("vote from a candidate holding the committed entry: %v, want it passed", err)
	}
}

// TestCommittedTerm: the term of the entry at a request's commit index is
// known when the request carries that entry or names it as its previous
// one.
func TestCommittedTerm(t *testing.T) {
	entries := []*raft.Log{{Index: 11, Term: 4}, {Index: 12, Term: 5}}
	for _, c := range []struct {
		req  raft.AppendEntriesRequest
		want uint64
	}{
		{raft.AppendEntriesRequest{PrevLogEntry: 10, PrevLogTerm: 3, LeaderCommitIndex: 10}, 3},
		{raft.AppendEntriesRequest{PrevLogEntry: 10, PrevLogTerm: 3, Entries: entries, LeaderCommitIndex: 12}, 5},
		{raft.AppendEntriesRequest{PrevLogEntry: 10, PrevLogTerm: 3, Entries: entries, LeaderCommitIndex: 11}, 4},
		{raft.AppendEntriesRequest{PrevLogEntry: 10, PrevLogTerm: 3, Entries: entries, LeaderCommitIndex: 9}, 0},
		{raft.AppendEntriesRequest{PrevLogEntry: 10, PrevLogTerm: 3, Entries: entries, LeaderCommitIndex: 13}, 0},
		{raft.AppendEntriesRequest{Term: 6}, 0},
	} {
		if got := committedTerm(&c.req); got != c.want {
			t.Errorf("commit %d, previous %d, %d entries: term %d, want %d", c.req.LeaderCommitIndex, c.req.PrevLogEntry, len(c.req.Entries), got, c.want)
		}
	}
}
