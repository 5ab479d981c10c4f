package raftstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testwait"
)

var errCutOff = errors.New("cut off from the network")

// cuttableLayer is a loopback raft.StreamLayer that can cut its store off:
// while cut, its dials fail, the connections it accepts are closed at
// once, and the connections open when it was cut are closed.
type cuttableLayer struct {
	net.Listener
	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
}

func newCuttableLayer(t *testing.T) *cuttableLayer {
	t.Helper()
	return cuttableLayerAt(t, "127.0.0.1:0")
}

// cuttableLayerAt is a cuttableLayer listening on addr (a restarted store
// keeps the Raft address its peers know; the port may take a moment to be
// free again).
func cuttableLayerAt(t *testing.T, addr string) *cuttableLayer {
	t.Helper()
	var (
		ln  net.Listener
		err error
	)
	testwait.For(t, 5*time.Second, "listening on "+addr, func() bool {
		ln, err = (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
		return err == nil
	})
	return &cuttableLayer{Listener: ln, conns: make(map[net.Conn]struct{})}
}

func (l *cuttableLayer) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.track(c) {
			return c, nil
		}
	}
}

func (l *cuttableLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	if !l.track(c) {
		return nil, errCutOff
	}
	return c, nil
}

// track keeps c to close it when the layer is cut; it closes c and
// returns false if the layer is cut now.
func (l *cuttableLayer) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		c.Close()
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *cuttableLayer) setCut(cut bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = cut
	if cut {
		for c := range l.conns {
			c.Close()
		}
		clear(l.conns)
	}
}

// TestFollowerDefaultReadAfterPartitionHealsSeesTheLeaderCommit: when a
// partition heals, the leader's heartbeats reach the follower at once
// while replication to it is still backing off. A DEFAULT read on that
// follower is refused, or waits, until its replica has applied what the
// leader had committed before the heal; it never answers from the replica
// as the partition left it.
func TestFollowerDefaultReadAfterPartitionHealsSeesTheLeaderCommit(t *testing.T) {
	const bound = 500 * time.Millisecond
	layers := make([]*cuttableLayer, 3)
	stores := openCluster(t, 3, func(i int, cfg *Config) {
		layers[i] = newCuttableLayer(t)
		cfg.StreamLayer = layers[i]
		cfg.StaleReadBound = bound
	})
	leader := leaderOf(t, stores)
	var (
		follower *Store
		layer    *cuttableLayer
	)
	for i, s := range stores {
		if s != leader {
			follower, layer = s, layers[i]
			break
		}
	}
	mustStoreApply(t, leader, registerCmd(testInstance("api", "0", "n1")))
	eventually(t, 10*time.Second, "DEFAULT reads on the follower", func() bool {
		return follower.CheckRead(pb.Consistency_DEFAULT) == nil
	})

	layer.setCut(true)
	for i := 1; i <= 50; i++ {
		mustStoreApply(t, leader, registerCmd(testInstance("api", fmt.Sprint(i), "n1")))
	}
	commit := leader.raft.CommitIndex()
	// The partition outlasts the bound DEFAULT reads are held to, and
	// the leader's replication to the follower backs off meanwhile.
	eventually(t, 10*time.Second, "the follower to go without the leader for longer than the stale-read bound", func() bool {
		return time.Since(follower.raft.LastContact()) > 2*bound
	})
	if rev := follower.FSM().Revision(); rev >= commit {
		t.Fatalf("the cut-off follower applied revision %d, the leader's commit index %d", rev, commit)
	}

	layer.setCut(false)
	refused := 0
	eventually(t, 30*time.Second, "a DEFAULT read on the healed follower", func() bool {
		err := follower.CheckRead(pb.Consistency_DEFAULT)
		if err != nil {
			if !errors.Is(err, ErrStaleRead) {
				t.Fatalf("DEFAULT read on the healed follower refused with %v, want ErrStaleRead", err)
			}
			refused++
			return false
		}
		if insts, rev := follower.FSM().Instances("api"); rev < commit || len(insts) != 51 {
			t.Fatalf("DEFAULT read on the healed follower answered %d instances at revision %d; the leader had committed %d (51 instances) before the heal",
				len(insts), rev, commit)
		}
		return true
	})
	t.Logf("%d DEFAULT reads refused after the heal", refused)
}

// TestFollowerDefaultReadWaitsForTheLeaderCommitItWasSent: a DEFAULT read
// on a follower that has been sent a commit index it has not applied yet
// waits until it has, and is refused saying how far behind it is when it
// has not applied it in time.
func TestFollowerDefaultReadWaitsForTheLeaderCommitItWasSent(t *testing.T) {
	stores := openCluster(t, 3)
	leader := leaderOf(t, stores)
	var follower *Store
	for _, s := range stores {
		if s != leader {
			follower = s
			break
		}
	}
	mustStoreApply(t, leader, registerCmd(testInstance("api", "0", "n1")))
	eventually(t, 10*time.Second, "DEFAULT reads on the follower", func() bool {
		return follower.CheckRead(pb.Consistency_DEFAULT) == nil
	})
	// As if the leader had sent a commit index ahead of its replication.
	sendCommit := func(commit uint64) {
		follower.transport.commits.observe(&raft.AppendEntriesRequest{Term: follower.raft.CurrentTerm(), LeaderCommitIndex: commit}, time.Now())
	}
	checkRefusal := func(err error) {
		t.Helper()
		if !errors.Is(err, ErrStaleRead) || !strings.Contains(err.Error(), "entries behind the leader's commit index") {
			t.Fatalf("DEFAULT read on a follower behind the commit index it was sent: %v, want ErrStaleRead saying it is entries behind", err)
		}
	}

	// A commit index the leader reaches with the next writes.
	target := leader.raft.CommitIndex() + 5
	sendCommit(target)
	// read reports the check's answer and the revision right after it.
	type read struct {
		err error
		rev uint64
	}
	readNow := func() read {
		err := follower.CheckRead(pb.Consistency_DEFAULT)
		return read{err, follower.FSM().Revision()}
	}
	reads := make(chan read, 1)
	go func() { reads <- readNow() }()
	for i := 1; i <= 5; i++ {
		mustStoreApply(t, leader, registerCmd(testInstance("api", fmt.Sprint(i), "n1")))
	}
	deadline := time.Now().Add(10 * time.Second)
	for r := <-reads; ; r = readNow() {
		if r.err == nil {
			if r.rev < target {
				t.Fatalf("DEFAULT read allowed at revision %d, below the commit index %d the follower was sent", r.rev, target)
			}
			break
		}
		checkRefusal(r.err) // applying took longer than the read waits: retry
		if time.Now().After(deadline) {
			t.Fatalf("no DEFAULT read allowed on the follower within 10s: %v", r.err)
		}
	}

	// A commit index this replica does not reach before the caller gives up.
	sendCommit(target + 1_000_000)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	checkRefusal(follower.CheckReadContext(ctx, pb.Consistency_DEFAULT))
}

// TestAFollowerCatchesUpOnceAfterTheLeadersSilence: when the leader's
// commit index reaches a follower again after longer than StaleReadBound
// without it (a partition healed; the requests that end the silence may
// have been sent during it, delayed, and carry an old commit index), the
// follower's next DEFAULT read first catches up to the leader's read
// index, once; reads without such a silence do not ask.
func TestAFollowerCatchesUpOnceAfterTheLeadersSilence(t *testing.T) {
	stores := openCluster(t, 3, func(i int, cfg *Config) { cfg.StaleReadBound = 2 * time.Second })
	l := leaderOf(t, stores)
	var f *Store
	for _, s := range stores {
		if s != l {
			f = s
		}
	}
	var asked atomic.Int32
	f.SetReadIndexSource(func(ctx context.Context) (uint64, error) {
		asked.Add(1)
		return l.ReadIndex(ctx)
	})
	mustStoreApply(t, l, registerCmd(testInstance("api", "0", "n1")))
	read := func(what string) {
		t.Helper()
		if err := f.CheckReadContext(t.Context(), pb.Consistency_DEFAULT); err != nil {
			t.Fatalf("DEFAULT read on the follower, %s: %v", what, err)
		}
	}
	// The first commit index the follower ever got ends a silence too:
	// its first read may ask.
	read("the first")
	asked.Store(0)
	read("in steady contact")
	if n := asked.Load(); n != 0 {
		t.Fatalf("a read in steady contact asked the leader's read index %d times, want none", n)
	}

	// The last commit index arrived an hour ago, as at the end of a long
	// partition; the leader's next request (every CommitTimeout) ends the
	// silence.
	f.transport.commits.mu.Lock()
	f.transport.commits.at = time.Now().Add(-time.Hour)
	before := f.transport.commits.resumed
	f.transport.commits.mu.Unlock()
	eventually(t, 10*time.Second, "the leader's commit index arrives again", func() bool { return f.transport.commits.resumedAt().After(before) })
	read("after the silence")
	read("again")
	if n := asked.Load(); n != 1 {
		t.Fatalf("after the leader's silence, two reads asked the leader's read index %d times, want once", n)
	}
}
