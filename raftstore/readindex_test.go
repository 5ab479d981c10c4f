package raftstore

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// TestLeaderAcksCountOnlyVotersThatAcceptedRequestsSentSinceTheReadBegan:
// a read's quorum is the leader and the voters that accepted a request of
// the read's term sent at or after its start; older sends, other terms and
// nonvoters do not count, and an older send never replaces a newer one.
func TestLeaderAcksCountOnlyVotersThatAcceptedRequestsSentSinceTheReadBegan(t *testing.T) {
	var a leaderAcks
	start := time.Unix(1000, 0)
	var servers []raft.Server
	for _, id := range []raft.ServerID{"n1", "n2", "n3", "n4", "n5"} {
		servers = append(servers, raft.Server{ID: id, Suffrage: raft.Voter})
	}
	servers = append(servers, raft.Server{ID: "learner", Suffrage: raft.Nonvoter})
	check := func(want bool, why string) {
		t.Helper()
		if got, _ := a.confirmed("n1", servers, 7, start); got != want {
			t.Fatalf("%s: confirmed = %v, want %v", why, got, want)
		}
	}
	check(false, "no peer has answered")
	a.accepted("n2", 7, start.Add(-time.Millisecond))
	a.accepted("n3", 7, start.Add(-time.Second))
	a.accepted("learner", 7, start.Add(time.Second)) // a nonvoter
	a.accepted("n4", 6, start.Add(time.Second))      // an older term
	check(false, "answers to requests sent before the read, of another term, or from a nonvoter")
	a.accepted("n2", 7, start)
	check(false, "the leader and one voter of five")
	_, changed := a.confirmed("n1", servers, 7, start)
	a.accepted("n5", 7, start.Add(time.Millisecond))
	select {
	case <-changed:
	default:
		t.Fatal("recording an answer did not wake the read waiting for it")
	}
	check(true, "the leader, n2 and n5 of five voters")
	a.accepted("n5", 7, start.Add(-time.Second)) // a pipelined answer arriving late
	a.accepted("n2", 6, start.Add(time.Second))  // an older term, arriving late
	check(true, "late answers to older requests")
	if got, _ := a.confirmed("n1", servers, 8, start); got {
		t.Fatal("answers of term 7 confirmed a read of term 8")
	}
	if got, _ := a.confirmed("n9", servers, 7, start.Add(time.Hour)); got {
		t.Fatal("confirmed a read by a leader that is not a voter, with no voter's answer since the read began")
	}
	if got, _ := a.confirmed("n1", []raft.Server{{ID: "n1", Suffrage: raft.Voter}}, 7, start.Add(time.Hour)); !got {
		t.Fatal("a sole voter did not confirm its own read")
	}
}

// answerHoldLayer is a loopback raft.StreamLayer that can hold its store's
// answers back, as the sockets of a paused process hold them: while held,
// what arrives on connections it dialed (its peers' answers) is kept from
// the store until release, and connections it accepts are closed when
// their first bytes arrive, so that no peer reaches it.
type answerHoldLayer struct {
	net.Listener
	mu       sync.Mutex
	released chan struct{} // nil unless held; closed at release
	heldFrom map[string]bool
}

func newAnswerHoldLayer(t *testing.T) *answerHoldLayer {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &answerHoldLayer{Listener: ln, heldFrom: make(map[string]bool)}
}

func (l *answerHoldLayer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &holdConn{Conn: c, l: l}, nil
}

func (l *answerHoldLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	return &holdConn{Conn: c, l: l, dialed: string(addr)}, nil
}

// hold starts holding answers; release hands them over.
func (l *answerHoldLayer) hold() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.released = make(chan struct{})
	clear(l.heldFrom)
}

func (l *answerHoldLayer) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	close(l.released)
	l.released = nil
}

// holding reports how many peers' answers are held.
func (l *answerHoldLayer) holding() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.heldFrom)
}

// holdConn is a connection of an answerHoldLayer.
type holdConn struct {
	net.Conn
	l      *answerHoldLayer
	dialed string // the peer's address; empty when accepted
}

func (c *holdConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n == 0 {
		return n, err
	}
	c.l.mu.Lock()
	released := c.l.released
	if released != nil && c.dialed != "" {
		c.l.heldFrom[c.dialed] = true
	}
	c.l.mu.Unlock()
	switch {
	case released == nil:
	case c.dialed == "":
		c.Conn.Close()
		return 0, net.ErrClosed
	default:
		<-released
	}
	return n, err
}

// deposedLeader is a leader whose followers' answers are held back (a
// paused process) while they elect a new leader and commit a write: it
// still believes it leads.
type deposedLeader struct {
	old, leader *Store
	layer       *answerHoldLayer
	heldAt      time.Time // when its answers began to be held
}

// depose builds a deposedLeader of three stores; configure adjusts the
// old leader's configuration.
func depose(t *testing.T, configure func(cfg *Config)) deposedLeader {
	t.Helper()
	layer := newAnswerHoldLayer(t)
	stores := openCluster(t, 3, func(i int, cfg *Config) {
		if i == 1 {
			cfg.StreamLayer = layer
			slowLeaderConfig(cfg)
			configure(cfg)
		}
	})
	old, others := stores[1], []*Store{stores[0], stores[2]}
	setTimeouts := leadSlowly(t, old, others)
	mustStoreApply(t, old, registerCmd(testInstance("api", "before", "n1")))

	heldAt := time.Now()
	layer.hold()
	eventually(t, 10*time.Second, "n2 to hold an answer from each follower", func() bool { return layer.holding() == 2 })
	setTimeouts(100 * time.Millisecond) // elect now
	leader := leaderOf(t, others)
	mustStoreApply(t, leader, registerCmd(testInstance("api", "after", "n1")))
	if !old.IsLeader() {
		t.Fatal("n2 stepped down before its held answers were released: the scenario needs it to still believe it leads")
	}
	return deposedLeader{old: old, leader: leader, layer: layer, heldAt: heldAt}
}

// TestConsistentReadIgnoresAnswersSentBeforeItBegan: a leader whose
// followers' answers were held back (a paused process) while they elected
// a new leader and committed a write, and which gets those answers only
// after a CONSISTENT read began, must not serve the read from its old
// state on their strength: raft's VerifyLeader counts them, the read
// counts only answers to requests sent after it began.
func TestConsistentReadIgnoresAnswersSentBeforeItBegan(t *testing.T) {
	d := depose(t, func(*Config) {})
	read := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		read <- d.old.CheckReadContext(ctx, pb.Consistency_CONSISTENT)
	}()
	time.Sleep(100 * time.Millisecond) // the read's verification registers
	d.layer.release()
	err := <-read
	if err == nil && d.old.FSM().Instance("api", "after") == nil {
		t.Fatalf("CONSISTENT read on the deposed leader n2 allowed without the write %s committed before it began", d.leader.cfg.NodeID)
	}
	checkReadRefused(t, err, ErrNotLeader, ErrNoLeader)
}

// TestDefaultReadOnALeaderNotHeardWithinTheBound: a DEFAULT read on a
// leader no quorum of voters has answered within StaleReadBound is
// refused: it may have been deposed (here it has, and its replica lacks
// the new leader's write).
func TestDefaultReadOnALeaderNotHeardWithinTheBound(t *testing.T) {
	const bound = 200 * time.Millisecond
	d := depose(t, func(cfg *Config) { cfg.StaleReadBound = bound })
	defer d.layer.release()
	// Its last answers are to requests sent before the hold.
	time.Sleep(time.Until(d.heldAt.Add(2 * bound)))
	err := d.old.CheckRead(pb.Consistency_DEFAULT)
	if err == nil && d.old.FSM().Instance("api", "after") == nil {
		t.Fatalf("DEFAULT read on the deposed leader n2 allowed without the write %s committed more than %v before", d.leader.cfg.NodeID, bound)
	}
	checkReadRefused(t, err, ErrStaleRead)
	if !d.old.IsLeader() {
		t.Fatal("n2 stepped down: the read was not refused by the bound")
	}
}

// TestConsistentReadNeedsAQuorumOfVoters: nonvoters' answers confirm no
// read. A leader cut off from the other voters, whose nonvoters still
// answer it, refuses CONSISTENT reads (raft's VerifyLeader counts the
// nonvoters).
func TestConsistentReadNeedsAQuorumOfVoters(t *testing.T) {
	layers := make([]*cuttableLayer, 3)
	stores := openCluster(t, 3, func(i int, cfg *Config) {
		if i == 1 {
			slowLeaderConfig(cfg)
			return
		}
		layers[i] = newCuttableLayer(t)
		cfg.StreamLayer = layers[i]
	})
	for _, id := range []string{"n4", "n5"} {
		cfg := testStoreConfig(t, t.TempDir(), slog.LevelWarn)
		cfg.NodeID, cfg.Bootstrap = id, false
		s := New(cfg)
		if err := s.Open(); err != nil {
			t.Fatalf("open %s: %v", id, err)
		}
		t.Cleanup(func() { s.Close() })
		if err := stores[0].AddNonvoter(t.Context(), id, s.RaftAddr()); err != nil {
			t.Fatalf("add nonvoter %s: %v", id, err)
		}
	}
	leader := stores[1]
	leadSlowly(t, leader, []*Store{stores[0], stores[2]})
	mustStoreApply(t, leader, registerCmd(testInstance("api", "0", "n1")))

	layers[0].setCut(true)
	layers[2].setCut(true)
	if !leader.IsLeader() {
		t.Fatal("n2 stepped down as soon as the other voters were cut off: the scenario needs it to still believe it leads")
	}
	checkReadRefused(t, leader.CheckRead(pb.Consistency_CONSISTENT), ErrNotLeader, ErrNoLeader)
}

// slowLeaderConfig gives the store that is to lead a lease long enough to
// outlast a test's election of another leader.
func slowLeaderConfig(cfg *Config) {
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 5*time.Second, 5*time.Second, 5*time.Second
}

// leadSlowly makes leader, opened with slowLeaderConfig, lead, and waits
// until it serves CONSISTENT reads: the others first learn to wait for its
// rare heartbeats. It returns what sets the
// others' heartbeat and election timeouts.
func leadSlowly(t *testing.T, leader *Store, others []*Store) (setTimeouts func(time.Duration)) {
	t.Helper()
	setTimeouts = func(d time.Duration) {
		t.Helper()
		for _, s := range others {
			rc := s.raft.ReloadableConfig()
			rc.HeartbeatTimeout, rc.ElectionTimeout = d, d
			if err := s.raft.ReloadConfig(rc); err != nil {
				t.Fatal(err)
			}
		}
	}
	setTimeouts(2 * time.Second)
	for _, s := range others {
		if s.IsLeader() {
			if err := s.raft.LeadershipTransferToServer(raft.ServerID(leader.cfg.NodeID), raft.ServerAddress(leader.RaftAddr())).Error(); err != nil {
				t.Fatalf("transfer leadership to %s: %v", leader.cfg.NodeID, err)
			}
		}
	}
	eventually(t, 10*time.Second, leader.cfg.NodeID+" to lead and serve CONSISTENT reads", func() bool {
		return leader.CheckRead(pb.Consistency_CONSISTENT) == nil
	})
	return setTimeouts
}

// checkReadRefused fails t unless err refuses a read with one of want.
func checkReadRefused(t *testing.T, err error, want ...error) {
	t.Helper()
	for _, w := range want {
		if errors.Is(err, w) {
			t.Logf("read refused: %v", err)
			return
		}
	}
	t.Fatalf("read: %v, want it refused with one of %v", err, want)
}

// TestAFollowerThatLostTimeCatchesUpToTheLeadersReadIndex: a follower
// whose agent did not run for a while (Config.Lost grew) serves DEFAULT
// reads again only once its replica has applied the leader's read index,
// fetched from the leader after the stall, once per stall; a failed fetch
// or a replica behind the index refuses the read as stale.
func TestAFollowerThatLostTimeCatchesUpToTheLeadersReadIndex(t *testing.T) {
	var lost atomic.Int64
	stores, apis := forwardingCluster(t, func(_ int, cfg *Config) {
		cfg.Lost = func() time.Duration { return time.Duration(lost.Load()) }
	})
	leader := leaderOf(t, stores)
	var (
		follower *Store
		api      *internalAPI
	)
	for i, s := range stores {
		if s != leader {
			follower = s
		} else {
			api = apis[i]
		}
	}
	fwd := NewForwarder(follower, ForwardConfig{LeaderWait: 5 * time.Second, Dial: newTestDialer(t).dial})
	mustStoreApply(t, leader, registerCmd(testInstance("api", "0", "n1")))
	eventually(t, 10*time.Second, "DEFAULT reads on the follower", func() bool {
		return follower.CheckRead(pb.Consistency_DEFAULT) == nil
	})

	lost.Store(int64(5 * time.Second))
	checkReadRefused(t, follower.CheckRead(pb.Consistency_DEFAULT), ErrStaleRead) // no source yet
	follower.SetReadIndexSource(func(context.Context) (uint64, error) { return 0, ErrNoLeader })
	checkReadRefused(t, follower.CheckRead(pb.Consistency_DEFAULT), ErrStaleRead)
	follower.SetReadIndexSource(func(context.Context) (uint64, error) { return leader.raft.CommitIndex() + 1000, nil })
	err := follower.CheckRead(pb.Consistency_DEFAULT)
	if !errors.Is(err, ErrStaleRead) || !strings.Contains(err.Error(), "entries behind the leader's read index") {
		t.Fatalf("DEFAULT read on a follower behind the read index after a stall: %v, want ErrStaleRead saying how far behind", err)
	}

	follower.SetReadIndexSource(fwd.ReadIndex)
	for i := 1; i <= 5; i++ {
		mustStoreApply(t, leader, registerCmd(testInstance("api", strconv.Itoa(i), "n1")))
	}
	commit := leader.raft.CommitIndex()
	if err := follower.CheckRead(pb.Consistency_DEFAULT); err != nil {
		t.Fatalf("DEFAULT read on a follower after a stall, the leader reachable: %v", err)
	}
	if rev := follower.FSM().Revision(); rev < commit {
		t.Fatalf("DEFAULT read allowed after a stall at revision %d, below the leader's commit index %d before it", rev, commit)
	}
	if n := api.readIndexCalls.Load(); n != 1 {
		t.Fatalf("the leader was asked its read index %d times after one stall, want 1", n)
	}
	if err := follower.CheckRead(pb.Consistency_DEFAULT); err != nil || api.readIndexCalls.Load() != 1 {
		t.Fatalf("a second DEFAULT read after the catch-up: %v, %d read index calls; want nil and still 1", err, api.readIndexCalls.Load())
	}
	lost.Add(int64(time.Second))
	if err := follower.CheckRead(pb.Consistency_DEFAULT); err != nil || api.readIndexCalls.Load() != 2 {
		t.Fatalf("a DEFAULT read after a second stall: %v, %d read index calls; want nil and 2", err, api.readIndexCalls.Load())
	}
}
