package raftstore

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// A leader whose heartbeats a voter does not answer cannot replicate to
// it, though gossip may well count it alive: one-way loss (the voter
// receives gossip through the others but not the leader's packets), a
// firewall on the Raft port alone. The leader's Quorum counts such a
// voter unreachable, "not answering the leader", so that `zrpcctl
// status` and zrpc_raft_voters_unreachable show it, as Consul's
// autopilot marks a server unhealthy by its last contact.

// notAnsweringLeader is the Unreachable status of a voter whose
// heartbeats fail.
const notAnsweringLeader = "not answering the leader"

// heartbeats is which voters this store, leading, could not heartbeat.
type heartbeats struct {
	mu      sync.Mutex
	failing map[string]failingPeer
}

// failingPeer is a voter whose heartbeats fail: since when it was last
// heard from, when its latest heartbeat failed, in which leader epoch (a
// failure seen in an earlier term says nothing of this one).
type failingPeer struct {
	since, last time.Time
	epoch       context.Context
}

// failureFresh is how long a failed heartbeat counts without another:
// raft tries a failing peer again at least every half heartbeat timeout
// after its RPC times out (the transport's 5 s), so a peer still failing
// fails again well within it. It bounds how long a failure raft never
// reports the end of (its heartbeats stop with the term) could count.
const failureFresh = 20 * time.Second

// watchHeartbeats records raft's failed heartbeats until the store stops;
// the resumed ones come through watchPeersBack, which observes them
// already.
func (s *Store) watchHeartbeats() {
	observe[raft.FailedHeartbeatObservation](s, func(o raft.Observation) {
		if f, ok := o.Data.(raft.FailedHeartbeatObservation); ok {
			s.heartbeatFailed(string(f.PeerID), f.LastContact, time.Now())
		}
	}, nil)
}

// heartbeatFailed records that a heartbeat to peer failed at now, the
// peer last heard from at lastContact (zero: never in this term).
func (s *Store) heartbeatFailed(peer string, lastContact, now time.Time) {
	h := &s.heartbeats
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failing == nil {
		h.failing = map[string]failingPeer{}
	}
	if p, ok := h.failing[peer]; ok && p.epoch.Err() == nil && now.Sub(p.last) < failureFresh {
		p.last = now // failing still: keep when it began
		h.failing[peer] = p
		return
	}
	since := lastContact
	if since.IsZero() {
		since = now
	}
	h.failing[peer] = failingPeer{since: since, last: now, epoch: s.leaderEpoch()}
}

// heartbeatResumed records that peer answers the leader's heartbeats.
func (s *Store) heartbeatResumed(peer string) {
	h := &s.heartbeats
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.failing, peer)
}

// notAnswering returns since when peer has not answered this leader's
// heartbeats at now, and false if it has (or this store does not lead).
func (s *Store) notAnswering(peer string, now time.Time) (time.Time, bool) {
	if !s.IsLeader() {
		return time.Time{}, false
	}
	h := &s.heartbeats
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.failing[peer]
	if !ok || p.epoch.Err() != nil || now.Sub(p.last) >= failureFresh {
		return time.Time{}, false
	}
	return p.since, true
}
