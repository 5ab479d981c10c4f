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
// failure seen in an earlier term says nothing of this one), and raft's
// last contact with it at that failure.
type failingPeer struct {
	since, last time.Time
	contact     time.Time
	epoch       context.Context
}

// counts reports whether p still counts at now, when the newest request
// the peer accepted (leaderAcks.latest) was sent at accepted: its failure
// is of the current leader epoch, within failureFresh, and the peer has
// accepted no request sent after raft's last contact with it at the
// failure.
//
// raft sets its last contact with a peer as it processes each answer, so
// a request the peer accepted before a failure was sent before that
// failure's last contact, and one sent after it was accepted after the
// failure: the peer answers again. (One answered while the failure came,
// before raft processed it, ends the failure early; raft's next failure
// counts.) raft's resumed heartbeat says the same (heartbeatResumed), but
// it comes through another observer's goroutine, which may handle it
// before the failure it ends, and raft drops the observations an observer
// is too slow to take. The transport records the accepted request before
// raft reports the resume, so the outcome depends neither on which is
// handled first nor on whether the resume is.
func (p failingPeer) counts(now, accepted time.Time) bool {
	return p.epoch.Err() == nil && now.Sub(p.last) < failureFresh && !accepted.After(p.contact)
}

// failureFresh is how long a failed heartbeat counts without another:
// raft tries a failing peer again at least every half heartbeat timeout
// after its RPC times out (the transport's 5 s), so a peer still failing
// fails again well within it. It bounds how long a failure raft never
// reports the end of (its heartbeats stop with the term) could count.
const failureFresh = 20 * time.Second

// watchHeartbeats records raft's failed heartbeats until the store
// stops; the resumed ones come through watchPeersBack, which observes
// them already.
func (s *Store) watchHeartbeats() {
	observe[raft.FailedHeartbeatObservation](s, func(o raft.Observation) {
		if f, ok := o.Data.(raft.FailedHeartbeatObservation); ok {
			s.heartbeatFailed(string(f.PeerID), f.LastContact, time.Now())
		}
	}, nil)
}

// retain forgets the failures of the peers member rejects.
func (h *heartbeats) retain(member func(raft.ServerID) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for peer := range h.failing {
		if !member(raft.ServerID(peer)) {
			delete(h.failing, peer)
		}
	}
}

// heartbeatFailed records that a heartbeat to peer failed at now, the
// peer last heard from at lastContact (zero: never in this term). A
// failure the peer has accepted a request since does not count
// (failingPeer.counts), nor continue the run of failures before it.
func (s *Store) heartbeatFailed(peer string, lastContact, now time.Time) {
	contact := lastContact
	if contact.IsZero() {
		contact = now
	}
	accepted := s.transport.acks.latest(raft.ServerID(peer))
	h := &s.heartbeats
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failing == nil {
		h.failing = map[string]failingPeer{}
	}
	if p, ok := h.failing[peer]; ok && p.counts(now, accepted) {
		p.last = now // failing still: keep when it began
		if contact.After(p.contact) {
			p.contact = contact
		}
		h.failing[peer] = p
		return
	}
	h.failing[peer] = failingPeer{since: contact, last: now, contact: contact, epoch: s.leaderEpoch()}
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
	accepted := s.transport.acks.latest(raft.ServerID(peer))
	h := &s.heartbeats
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.failing[peer]
	if !ok || !p.counts(now, accepted) {
		return time.Time{}, false
	}
	return p.since, true
}
