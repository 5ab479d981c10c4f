package raftstore

import (
	"context"
	"fmt"

	"github.com/hashicorp/raft"
)

// A call forwarded to the leader (Forwarder.OnLeader) waits on one agent.
// When that agent stops answering without closing its connections (it
// is stopped, its VM paused, or a partition drops its packets), the call
// waited for LeaderWait (a forwarded write, which then failed with "the
// leader did not answer") or for the caller's deadline or the connection's
// keepalive (a TTL renewal, a repair report), although the other voters
// had elected a new leader within a second or two.
//
// The store therefore keeps a leader epoch: a context that ends whenever
// the leader this store sees changes. raft reports each change (a
// LeaderObservation): a follower that stops hearing from its leader sees
// no leader, then the new one. A forwarded call ends with the epoch it
// began in and is asked again of whoever leads now. Forwarded writes carry
// a request id, so a write the old leader did commit after all is applied
// once (the FSM's duplicate table answers the retry with its outcome).

// errLeaderMoved ends a forwarded call whose leader epoch ended: OnLeader
// asks the new leader.
var errLeaderMoved = fmt.Errorf("%w: the leader changed while the call waited for it", ErrNoLeader)

// leaderEpoch returns the context of the current leader epoch, which
// ends at the next leader change this store sees, or when it stops.
func (s *Store) leaderEpoch() context.Context {
	s.epochMu.Lock()
	defer s.epochMu.Unlock()
	return s.epoch
}

// nextLeaderEpoch ends the current leader epoch and begins the next;
// after the store stops, it only ends the current one.
func (s *Store) nextLeaderEpoch(stopped bool) {
	s.epochMu.Lock()
	defer s.epochMu.Unlock()
	s.endEpoch()
	if !stopped {
		s.epoch, s.endEpoch = context.WithCancel(context.Background())
	}
}

// watchLeaderMoves begins a new leader epoch at each leader change raft
// reports, until the store stops.
func (s *Store) watchLeaderMoves() {
	observe[raft.LeaderObservation](s, func(raft.Observation) { s.nextLeaderEpoch(false) },
		func() { s.nextLeaderEpoch(true) })
}
