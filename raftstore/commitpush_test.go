package raftstore

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// fakeFollowers answers pushes for commitPusher unit tests: each push is
// recorded, and answered once release lets it through (when hold is set).
type fakeFollowers struct {
	mu      sync.Mutex
	pushes  []*raft.AppendEntriesRequest
	to      []raft.ServerID
	refuse  bool
	hold    bool
	release chan struct{}
}

func (f *fakeFollowers) send(id raft.ServerID, _ raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	f.mu.Lock()
	f.pushes = append(f.pushes, req)
	f.to = append(f.to, id)
	hold, refuse := f.hold, f.refuse
	f.mu.Unlock()
	if hold {
		<-f.release
	}
	resp.Term = req.Term
	resp.Success = !refuse
	return nil
}

func (f *fakeFollowers) sent() ([]raft.ServerID, []*raft.AppendEntriesRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]raft.ServerID(nil), f.to...), append([]*raft.AppendEntriesRequest(nil), f.pushes...)
}

// replicate is a successful AppendEntries of entries first..last (none
// when first > last) after prev, as raft's replication sends it.
func replicate(p *commitPusher, id raft.ServerID, term, prev, first, last, commit uint64) {
	req := &raft.AppendEntriesRequest{
		RPCHeader:         raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("leader"), Addr: []byte("leader:1")},
		Term:              term,
		PrevLogEntry:      prev,
		PrevLogTerm:       term,
		LeaderCommitIndex: commit,
	}
	for i := first; i <= last; i++ {
		req.Entries = append(req.Entries, &raft.Log{Index: i, Term: term})
	}
	p.observe(id, raft.ServerAddress(id+":1"), req, &raft.AppendEntriesResponse{Term: term, Success: true}, nil)
}

// newTestPusher pushes to f while term is not 0 (this node leads in it).
func newTestPusher(t *testing.T, f *fakeFollowers, term *atomic.Uint64) *commitPusher {
	p := newCommitPusher(f.send, func() (uint64, bool) {
		tm := term.Load()
		return tm, tm != 0
	}, slog.New(slog.DiscardHandler))
	t.Cleanup(p.Close)
	return p
}

// pushedTo returns the commit indexes pushed to each follower, in order.
func pushedTo(to []raft.ServerID, reqs []*raft.AppendEntriesRequest) map[raft.ServerID][]uint64 {
	out := make(map[raft.ServerID][]uint64)
	for i, id := range to {
		out[id] = append(out[id], reqs[i].LeaderCommitIndex)
	}
	return out
}

// checkPushed checks that exactly want has been pushed, once n pushes
// were sent: pushes nobody should have had show up before a later push
// to the same follower.
func checkPushed(t *testing.T, f *fakeFollowers, n int, want map[raft.ServerID][]uint64) {
	t.Helper()
	if got := pushedTo(waitPushes(t, f, n)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pushed %v, want %v", got, want)
	}
}

// waitPushes waits until n pushes have been sent in all.
func waitPushes(t *testing.T, f *fakeFollowers, n int) ([]raft.ServerID, []*raft.AppendEntriesRequest) {
	t.Helper()
	eventually(t, 5*time.Second, fmt.Sprintf("%d pushes", n), func() bool {
		to, _ := f.sent()
		return len(to) >= n
	})
	return f.sent()
}

// TestCommitPushTellsOnlyFollowersThatHoldTheEntry: an applied index is
// pushed, as an AppendEntries of the follower's term naming the entry and
// its term, to followers that acknowledged it, never to one that has not:
// raft's replication carries the commit index to that one with the entries.
func TestCommitPushTellsOnlyFollowersThatHoldTheEntry(t *testing.T) {
	f := &fakeFollowers{}
	var term atomic.Uint64
	term.Store(3)
	p := newTestPusher(t, f, &term)
	replicate(p, "a", 3, 9, 10, 12, 9)
	replicate(p, "b", 3, 9, 10, 11, 9) // behind: has no entry 12
	replicate(p, "c", 3, 0, 1, 0, 0)   // a heartbeat: says nothing of c's log

	p.committed(12, 2)
	to, reqs := waitPushes(t, f, 1)
	want := raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("leader"), Addr: []byte("leader:1")},
		Term:      3, PrevLogEntry: 12, PrevLogTerm: 2, LeaderCommitIndex: 12,
	}
	if to[0] != "a" || fmt.Sprint(*reqs[0]) != fmt.Sprint(want) {
		t.Fatalf("pushed %+v to %s, want %+v to a", *reqs[0], to[0], want)
	}

	// b acknowledges entry 12: it is told at once, without another apply.
	replicate(p, "b", 3, 11, 12, 12, 11)
	to, reqs = waitPushes(t, f, 2)
	if to[1] != "b" || reqs[1].LeaderCommitIndex != 12 {
		t.Fatalf("second push %+v to %s, want commit 12 to b", *reqs[1], to[1])
	}

	// Nobody is told twice, nor what raft's own request already told it.
	p.committed(12, 2)
	replicate(p, "a", 3, 12, 13, 13, 13)
	p.committed(13, 3)
	p.committed(14, 3)
	replicate(p, "a", 3, 13, 14, 14, 13)
	replicate(p, "b", 3, 12, 13, 14, 12)
	checkPushed(t, f, 4, map[raft.ServerID][]uint64{"a": {12, 14}, "b": {12, 14}})
}

// TestCommitPushForgetsWhatAnotherTermOrARefusalSaid: a follower's
// acknowledgements count only in the term they were given in and until it
// refuses an append or a push; a node that does not lead, or leads in another term
// than its record of the follower, pushes nothing.
func TestCommitPushForgetsWhatAnotherTermOrARefusalSaid(t *testing.T) {
	f := &fakeFollowers{}
	var term atomic.Uint64
	term.Store(3)
	p := newTestPusher(t, f, &term)
	replicate(p, "a", 3, 9, 10, 20, 9)
	p.observe("a", "a:1", &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 20, Entries: []*raft.Log{{Index: 21}}},
		&raft.AppendEntriesResponse{Term: 3, Success: false}, nil)
	p.committed(15, 3)

	replicate(p, "b", 2, 9, 10, 20, 9)
	replicate(p, "b", 3, 9, 10, 12, 9) // the new term's match is lower than the old one's
	p.committed(16, 3)

	replicate(p, "c", 3, 9, 10, 20, 9)
	term.Store(0) // stepped down
	p.committed(17, 3)

	// Leading again in term 4, each follower acknowledges 18 and is told
	// it, and nothing before: a refused, b has no entry 16 in term 3, and
	// the node did not lead when it applied 17.
	term.Store(4)
	p.committed(18, 4)
	for _, id := range []raft.ServerID{"a", "b", "c"} {
		replicate(p, id, 4, 9, 10, 18, 9)
	}
	checkPushed(t, f, 3, map[raft.ServerID][]uint64{"a": {18}, "b": {18}, "c": {18}})

	// A refused push counts as a refusal: no more pushes until raft's
	// replication acknowledges again.
	f.mu.Lock()
	f.refuse = true
	f.mu.Unlock()
	for _, id := range []raft.ServerID{"a", "b", "c"} {
		replicate(p, id, 4, 18, 19, 20, 18)
	}
	p.committed(19, 4)
	eventually(t, 5*time.Second, "the refusals taken in", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, fl := range p.followers {
			if fl.match != 0 {
				return false
			}
		}
		return true
	})
	p.committed(20, 4)
	p.committed(21, 4)
	f.mu.Lock()
	f.refuse = false
	f.mu.Unlock()
	replicate(p, "a", 4, 20, 21, 21, 18)
	checkPushed(t, f, 7, map[raft.ServerID][]uint64{"a": {18, 19, 21}, "b": {18, 19}, "c": {18, 19}})
}

// TestCommitPushSendsOneAtATimePerFollower: while a push to a follower is
// in flight, newer indexes wait and then go as one push; a follower that
// does not answer holds up no push to another.
func TestCommitPushSendsOneAtATimePerFollower(t *testing.T) {
	f := &fakeFollowers{hold: true, release: make(chan struct{})}
	var term atomic.Uint64
	term.Store(3)
	p := newTestPusher(t, f, &term)
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(f.release) }) }) // before p.Close
	replicate(p, "a", 3, 0, 1, 100, 0)
	p.committed(1, 3)
	waitPushes(t, f, 1)
	for i := uint64(2); i <= 50; i++ {
		p.committed(i, 3)
	}
	f.mu.Lock()
	f.hold = false
	f.mu.Unlock()
	p.committed(51, 3)
	replicate(p, "b", 3, 0, 1, 100, 0)
	to, reqs := waitPushes(t, f, 2)
	if to[1] != "b" || reqs[1].LeaderCommitIndex != 51 {
		t.Fatalf("second push %+v to %s, want 51 to b while a's push hangs", *reqs[1], to[1])
	}
	release.Do(func() { close(f.release) })
	to, reqs = waitPushes(t, f, 3)
	if to[2] != "a" || reqs[2].LeaderCommitIndex != 51 {
		t.Fatalf("third push %+v to %s, want 51 to a once its first push returned", *reqs[2], to[2])
	}
	p.committed(52, 3)
	checkPushed(t, f, 5, map[raft.ServerID][]uint64{"a": {1, 51, 52}, "b": {51, 52}})
}

// countPushes counts the pushes s's pusher sends to each follower.
func countPushes(s *Store) func(id string) int {
	var mu sync.Mutex
	counts := make(map[raft.ServerID]int)
	s.pusher.mu.Lock()
	s.pusher.sending = func(id raft.ServerID, _ *raft.AppendEntriesRequest) {
		mu.Lock()
		defer mu.Unlock()
		counts[id]++
	}
	s.pusher.mu.Unlock()
	return func(id string) int {
		mu.Lock()
		defer mu.Unlock()
		return counts[raft.ServerID(id)]
	}
}

// longCommitTimeout makes raft itself tell followers a commit index only
// with the next entries or after 10-20 s.
func longCommitTimeout(_ int, cfg *Config) { cfg.CommitTimeout = 10 * time.Second }

// TestFollowersApplyALeaderWriteWithoutWaitingForTheCommitTimeout: with
// raft's commit timeout at 10 s, both followers apply a write on the
// leader long before it: the leader pushes its commit index to them.
func TestFollowersApplyALeaderWriteWithoutWaitingForTheCommitTimeout(t *testing.T) {
	stores := openCluster(t, 3, longCommitTimeout)
	leader := leaderOf(t, stores)
	for i := range 3 {
		rev := mustStoreApply(t, leader, registerCmd(testInstance("api", fmt.Sprint(i), "n1")))
		for _, s := range stores {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			err := s.FSM().WaitRevision(ctx, rev)
			cancel()
			if err != nil {
				t.Fatalf("write %d: %s has applied revision %d, not the leader's %d, after 3s (commit timeout 10s)",
					i, s.cfg.NodeID, s.FSM().Revision(), rev)
			}
		}
	}
}

// TestCommitPushSkipsACutOffFollowerWhichCatchesUpAfter: a follower the
// leader cannot replicate to is not pushed indexes it does not hold;
// once it is reachable again, raft's replication brings it the entries
// and it applies everything the leader committed.
func TestCommitPushSkipsACutOffFollowerWhichCatchesUpAfter(t *testing.T) {
	layers := make([]*cuttableLayer, 3)
	stores := openCluster(t, 3, longCommitTimeout, func(i int, cfg *Config) {
		layers[i] = newCuttableLayer(t)
		cfg.StreamLayer = layers[i]
	})
	leader := leaderOf(t, stores)
	var cut, other *Store
	var layer *cuttableLayer
	for i, s := range stores {
		switch {
		case s == leader:
		case cut == nil:
			cut, layer = s, layers[i]
		default:
			other = s
		}
	}
	rev := mustStoreApply(t, leader, registerCmd(testInstance("api", "0", "n1")))
	for _, s := range []*Store{cut, other} {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		if err := s.FSM().WaitRevision(ctx, rev); err != nil {
			t.Fatalf("%s did not apply revision %d before the cut", s.cfg.NodeID, rev)
		}
		cancel()
	}

	layer.setCut(true)
	pushes := countPushes(leader)
	for i := 1; i <= 20; i++ {
		rev = mustStoreApply(t, leader, registerCmd(testInstance("api", fmt.Sprint(i), "n1")))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if err := other.FSM().WaitRevision(ctx, rev); err != nil {
		t.Fatalf("%s (reachable) has applied revision %d, not the leader's %d", other.cfg.NodeID, other.FSM().Revision(), rev)
	}
	if n := pushes(other.cfg.NodeID); n == 0 {
		t.Errorf("the reachable follower %s was pushed nothing", other.cfg.NodeID)
	}
	if n := pushes(cut.cfg.NodeID); n != 0 {
		t.Errorf("the cut-off follower %s was pushed %d commit indexes it does not hold", cut.cfg.NodeID, n)
	}

	layer.setCut(false)
	ctx, cancel = context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := cut.FSM().WaitRevision(ctx, rev); err != nil {
		t.Fatalf("%s has applied revision %d after the heal, not the leader's %d", cut.cfg.NodeID, cut.FSM().Revision(), rev)
	}
	if insts, _ := cut.FSM().Instances("api"); len(insts) != 21 {
		t.Fatalf("%s has %d instances after catching up, want 21", cut.cfg.NodeID, len(insts))
	}
}

// TestCommitPushOfADeposedLeaderIsIgnored: after a leadership change the
// old leader pushes nothing, and a follower refuses a push of the old term
// that it accepts in the current one: raft's own term check is what makes
// a stale push harmless.
func TestCommitPushOfADeposedLeaderIsIgnored(t *testing.T) {
	stores := openCluster(t, 3, longCommitTimeout)
	old := leaderOf(t, stores)
	var rev uint64
	for i := range 3 {
		rev = mustStoreApply(t, old, registerCmd(testInstance("api", fmt.Sprint(i), "n1")))
	}
	oldTerm := old.raft.CurrentTerm()
	leader := transferLeadership(t, stores, old)
	var follower *Store
	for _, s := range stores {
		if s != old && s != leader {
			follower = s
		}
	}
	eventually(t, 10*time.Second, "the follower in the new term", func() bool {
		return follower.raft.CurrentTerm() > oldTerm
	})

	pushes := countPushes(old)
	old.pusher.committed(rev+1_000, 1) // as if the old leader applied more
	for _, s := range stores {
		old.pusher.mu.Lock()
		f := old.pusher.followers[raft.ServerID(s.cfg.NodeID)]
		old.pusher.mu.Unlock()
		if f != nil && old.pusher.pushOnce(f) {
			t.Errorf("the deposed leader pushed to %s", s.cfg.NodeID)
		}
	}

	var entry raft.Log
	if err := follower.logs.GetLog(rev, &entry); err != nil {
		t.Fatalf("read entry %d on %s: %v", rev, follower.cfg.NodeID, err)
	}
	push := func(term uint64) *raft.AppendEntriesResponse {
		req := &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(old.cfg.NodeID), Addr: []byte(old.RaftAddr())},
			Term:      term, PrevLogEntry: rev, PrevLogTerm: entry.Term, LeaderCommitIndex: rev,
		}
		var resp raft.AppendEntriesResponse
		if err := old.transport.NetworkTransport.AppendEntries(raft.ServerID(follower.cfg.NodeID), raft.ServerAddress(follower.RaftAddr()), req, &resp); err != nil {
			t.Fatalf("push of term %d: %v", term, err)
		}
		return &resp
	}
	if resp := push(oldTerm); resp.Success || resp.Term <= oldTerm {
		t.Errorf("a push of the deposed leader's term %d answered %+v, want refused with the newer term", oldTerm, resp)
	}
	if resp := push(follower.raft.CurrentTerm()); !resp.Success {
		t.Errorf("the same push in the current term answered %+v, want accepted", resp)
	}
	for _, s := range stores {
		if n := pushes(s.cfg.NodeID); n != 0 {
			t.Errorf("the deposed leader pushed %d commit indexes to %s", n, s.cfg.NodeID)
		}
	}
}

// TestIdleLeaderSendsFollowersItsCommitIndexRarely: with the default
// commit timeout, an idle leader sends a follower its commit index a few
// times a second (every 1-2x CommitTimeout), not a hundred: new commits
// reach followers by the push. It polls what the follower received, so
// it can only miss arrivals, never count too many.
func TestIdleLeaderSendsFollowersItsCommitIndexRarely(t *testing.T) {
	stores := openCluster(t, 3)
	leader := leaderOf(t, stores)
	rev := mustStoreApply(t, leader, registerCmd(testInstance("api", "0", "n1")))
	var follower *Store
	for _, s := range stores {
		if s != leader {
			follower = s
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := follower.FSM().WaitRevision(ctx, rev); err != nil {
		t.Fatalf("%s did not apply revision %d", follower.cfg.NodeID, rev)
	}
	arrivals := 0
	_, last := follower.transport.LeaderCommit()
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if _, at := follower.transport.LeaderCommit(); !at.Equal(last) {
			arrivals++
			last = at
		}
	}
	if limit := 20; arrivals > limit {
		t.Fatalf("an idle leader sent %s its commit index %d times in a second, want at most %d (commit timeout %s)",
			follower.cfg.NodeID, arrivals, limit, follower.cfg.CommitTimeout)
	}
	t.Logf("%d commit index arrivals in a second while idle", arrivals)
}

// TestFollowersLearnANewLeadersNoOpWithoutTheCommitTimeout: after a
// leadership change and no write since, the followers reach the new
// leader's applied index (its no-op and barrier, which never reach the
// FSM) by the push, with raft's commit timeout at 10 s.
func TestFollowersLearnANewLeadersNoOpWithoutTheCommitTimeout(t *testing.T) {
	stores := openCluster(t, 3, longCommitTimeout)
	applyThroughLeader(t, stores, registerCmd(testInstance("api", "0", "n1")))
	leader := transferLeadership(t, stores, leaderOf(t, stores))
	eventually(t, 3*time.Second, "the new leader's revision to cover its barrier", func() bool {
		return leader.FSM().Revision() >= leader.raft.AppliedIndex()
	})
	applied := leader.FSM().Revision()
	for _, s := range stores {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		err := s.FSM().WaitRevision(ctx, applied)
		cancel()
		if err != nil {
			t.Errorf("%s is at revision %d, not the new leader's %d, after 3s (commit timeout 10s)", s.cfg.NodeID, s.FSM().Revision(), applied)
		}
	}
}

// heldFSMs opens a cluster of n stores whose FSMs each stop, once told
// to, after decoding a batch and before applying it, until released.
type heldFSMs struct {
	stores []*Store
	holds  []atomic.Pointer[chan struct{}]
}

func openHeldCluster(t *testing.T, n int) *heldFSMs {
	h := &heldFSMs{holds: make([]atomic.Pointer[chan struct{}], n)}
	h.stores = openClusterOf(t, n, func(i int, s *Store) {
		s.fsm.decoded = func() {
			if c := h.holds[i].Load(); c != nil {
				<-*c
			}
		}
	}, longCommitTimeout)
	return h
}

// hold stops s's FSM before the next batch it applies; the returned
// function lets it go on (calling it twice is safe).
func (h *heldFSMs) hold(t *testing.T, s *Store) (release func()) {
	for i, x := range h.stores {
		if x == s {
			c := make(chan struct{})
			h.holds[i].Store(&c)
			var once sync.Once
			release = func() {
				once.Do(func() {
					h.holds[i].Store(nil)
					close(c)
				})
			}
			t.Cleanup(release)
			return release
		}
	}
	t.Fatal("not a store of the cluster")
	return nil
}

// applyHeld holds leader's FSM and applies the registration of api/w
// through leader in the background; done gets Apply's error once the
// FSM is released.
func (h *heldFSMs) applyHeld(t *testing.T, leader *Store) (release func(), done <-chan error) {
	release = h.hold(t, leader)
	errc := make(chan error, 1)
	go func() {
		_, err := leader.Apply(context.Background(), registerCmd(testInstance("api", "w", "n1")))
		errc <- err
	}()
	return release, errc
}

// TestFollowersApplyACommittedWriteWhileTheLeaderStillApplies: the leader
// pushes a batch's commit index before its own FSM applies the batch, so
// followers apply it while the leader does (with raft's commit timeout at
// 10 s nothing else would tell them).
func TestFollowersApplyACommittedWriteWhileTheLeaderStillApplies(t *testing.T) {
	h := openHeldCluster(t, 3)
	leader := leaderOf(t, h.stores)
	release, done := h.applyHeld(t, leader)
	for _, s := range h.stores {
		if s == leader {
			continue
		}
		eventually(t, 5*time.Second, s.cfg.NodeID+" applies the write the leader's FSM holds", func() bool {
			return s.FSM().Instance("api", "w") != nil
		})
	}
	if leader.FSM().Instance("api", "w") != nil {
		t.Fatal("the leader applied the write while its FSM was held")
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestConsistentReadWaitsForWhatAFollowerAlreadyShows: a follower may show
// a write before the leader's FSM has applied it; a consistent read on
// the leader begun after that waits until the leader has applied it too.
func TestConsistentReadWaitsForWhatAFollowerAlreadyShows(t *testing.T) {
	h := openHeldCluster(t, 3)
	leader := leaderOf(t, h.stores)
	release, done := h.applyHeld(t, leader)
	var follower *Store
	for _, s := range h.stores {
		if s != leader {
			follower = s
			break
		}
	}
	eventually(t, 5*time.Second, "the follower shows the write", func() bool {
		return follower.FSM().Instance("api", "w") != nil
	})

	type readResult struct {
		err  error
		seen bool
	}
	read := make(chan readResult, 1)
	go func() {
		err := leader.CheckReadContext(context.Background(), pb.Consistency_CONSISTENT)
		read <- readResult{err, leader.FSM().Instance("api", "w") != nil}
	}()
	var got readResult
	returned := false
	eventually(t, 10*time.Second, "the consistent read returns or waits for the leader's FSM", func() bool {
		select {
		case got = <-read:
			returned = true
			return true
		default:
			return goroutinesIn("", "raftstore.(*Store).waitApplied(") > 0
		}
	})
	release()
	if !returned {
		got = <-read
	}
	if got.err != nil {
		t.Fatalf("consistent read: %v", got.err)
	}
	if !got.seen {
		t.Fatal("a consistent read on the leader missed a write a follower already showed")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
