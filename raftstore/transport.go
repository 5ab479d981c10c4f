package raftstore

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// A follower's DEFAULT read must see at least what the leader had
// committed when it last told this agent its commit index. raft keeps the
// leader's commit index to itself, and its last-contact time does not
// tell how far this replica lags: heartbeats (raft's fast path) carry no
// commit index and resume at once when a partition heals, while log
// replication to the follower may still be backing off for seconds. The
// store's transport therefore reads the commit index off every
// AppendEntries request it hands to raft.

// leaderCommits records the highest commit index the leaders of the
// newest term seen have sent this agent, and when the last of their
// AppendEntries requests carrying one arrived.
type leaderCommits struct {
	mu     sync.Mutex
	term   uint64
	commit uint64
	at     time.Time
}

// observe notes an RPC received at now. Requests of an older term than
// one already seen come from a deposed leader and are ignored: what it
// had committed says nothing of what the cluster has. Heartbeats carry no
// commit index (LeaderCommitIndex 0): they only move the term on.
func (c *leaderCommits) observe(cmd any, now time.Time) {
	req, ok := cmd.(*raft.AppendEntriesRequest)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if req.Term < c.term {
		return
	}
	c.term = req.Term
	if req.LeaderCommitIndex == 0 {
		return
	}
	// An index once committed stays committed, whichever leader sent it.
	c.commit = max(c.commit, req.LeaderCommitIndex)
	c.at = now
}

// last returns the highest commit index seen and when the newest
// AppendEntries request carrying a commit index arrived; a zero time
// means none has yet.
func (c *leaderCommits) last() (commit uint64, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.commit, c.at
}

// transport is raft's NetworkTransport, which also records the leader's
// commit index from the AppendEntries requests it receives. Embedding
// keeps the optional interfaces raft looks for (WithClose, WithPreVote).
// Requests reach raft unchanged and in the order they arrived.
type transport struct {
	*raft.NetworkTransport
	commits leaderCommits

	rpcs      chan raft.RPC // what Consumer returns
	stop      chan struct{}
	done      chan struct{} // closed when forward returns
	closeOnce sync.Once
	closeErr  error
}

// raft uses pre-vote and closes the transport on Shutdown only when the
// transport offers them.
var (
	_ raft.WithClose   = (*transport)(nil)
	_ raft.WithPreVote = (*transport)(nil)
)

// newObservingTransport wraps inner and starts the goroutine that hands
// its RPCs on; Close stops it.
func newObservingTransport(inner *raft.NetworkTransport) *transport {
	t := &transport{
		NetworkTransport: inner,
		rpcs:             make(chan raft.RPC),
		stop:             make(chan struct{}),
		done:             make(chan struct{}),
	}
	go t.forward()
	return t
}

// forward passes the RPCs the network transport decoded to raft,
// observing each on the way. The channel is unbuffered like the network
// transport's own, so a busy raft still holds the sender back.
func (t *transport) forward() {
	defer close(t.done)
	in := t.NetworkTransport.Consumer()
	for {
		select {
		case <-t.stop:
			return
		case rpc := <-in:
			t.commits.observe(rpc.Command, time.Now())
			select {
			case t.rpcs <- rpc:
			case <-t.stop:
				return // the sender gives up when the network transport closes
			}
		}
	}
}

// Consumer implements raft.Transport.
func (t *transport) Consumer() <-chan raft.RPC { return t.rpcs }

// SetHeartbeatHandler implements raft.Transport: heartbeats take raft's
// fast path past Consumer, and are observed there.
func (t *transport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	if cb == nil {
		t.NetworkTransport.SetHeartbeatHandler(nil)
		return
	}
	t.NetworkTransport.SetHeartbeatHandler(func(rpc raft.RPC) {
		t.commits.observe(rpc.Command, time.Now())
		cb(rpc)
	})
}

// LeaderCommit returns the highest commit index a leader has sent this
// agent and when the newest AppendEntries request carrying one arrived
// (zero if none has).
func (t *transport) LeaderCommit() (commit uint64, at time.Time) { return t.commits.last() }

// Close implements raft.WithClose: it stops forwarding and closes the
// network transport. raft calls it on Shutdown; calling it again is safe.
func (t *transport) Close() error {
	t.closeOnce.Do(func() {
		close(t.stop)
		<-t.done
		t.closeErr = t.NetworkTransport.Close()
	})
	return t.closeErr
}
