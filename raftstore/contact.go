package raftstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// A watch served from a replica that is cut off from the leader (the
// agent is on the minority side of a partition, or no leader has been
// elected for a while) goes silent: nothing commits where it is, while
// the registry may move on elsewhere; a session there goes on while the
// others see the agent failed. Default reads refuse in that state
// (waitLeaderCommit); watches and sessions learn it from LeaderContact,
// so that a client with other agents to go to can move its watches and
// sessions there. etcd's watches offer the same (WithRequireLeader).
//
// The store looks every contactPoll: a leader is in contact (raft steps
// a leader down once no quorum answers it within its lease); a follower
// is when a leader replicated to it within StaleReadBound, or it led
// itself that recently (so that an agent stepping down in an election is
// not cut off for the moments until the new leader reaches it), unless it
// knows no leader and reaches too few voters for one (isolated, below),
// or its replica stopped applying (applyStall, below).

// contactPoll is how often the store looks whether it is in contact with
// a leader.
const contactPoll = 250 * time.Millisecond

// contact is whether the store is in contact with a leader, and what
// ends when it no longer is.
type contact struct {
	mu sync.Mutex
	// lost is why the store is cut off, nil while it is in contact.
	lost error
	// ctx is cancelled, with lost as its cause, when the store is cut
	// off; a new one replaces it when contact returns.
	ctx    context.Context
	cancel context.CancelCauseFunc
	// ledAt is when the monitor last saw this store lead.
	ledAt time.Time
	// had: the store has been in contact since it opened; until then
	// neither the loss nor the contact is news worth a log line.
	had bool
	// lostSeen is the time the process had not run (Config.Lost) at the
	// last look, and resumedAt the look that found it grown: the peers'
	// silence while the process stood still (stopped, its VM paused,
	// starved of CPU) says nothing of the network, so isolation counts
	// from the resumption.
	lostSeen  time.Duration
	resumedAt time.Time
	// noLeaderSince is when the monitor first saw this store, a
	// non-voter, know no leader; zero while it knows one (probe.go).
	noLeaderSince time.Time
	// closed: the store stopped; ctx is cancelled with ErrShuttingDown
	// and no look starts another.
	closed bool
	// peersPruned is the server ids of the Raft configuration the
	// per-peer state was last pruned to, joined (forgetRemovedPeers).
	peersPruned string
	// applied is the replica's revision at the last look, and appliedAt
	// the last look that found it moved, or not behind the leader's
	// commit index (applyStall); stalled: the store is cut off because
	// its replica stopped applying.
	applied   uint64
	appliedAt time.Time
	stalled   bool
	// handOnAt is when the store, leading with a replica that stopped
	// applying, asked raft to hand its leadership on; zero if it has not
	// during this stall (leaderStall).
	handOnAt time.Time
}

// LeaderContact returns a context that ends, with the reason as its
// cause, when this agent loses contact with a leader, or that reason now
// when it has lost it (an ErrStaleRead). A watch that must not outlive
// the contact ends with the context. A store that has lost it looks
// again first, so that the contact counts from when it returned, not from
// the monitor's next look.
func (s *Store) LeaderContact() (context.Context, error) {
	c := &s.contact
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lost != nil {
		s.lookAtContactLocked(time.Now())
	}
	switch {
	case c.lost != nil:
		return nil, c.lost
	case c.ctx == nil: // not open
		return context.Background(), nil
	}
	return c.ctx, nil
}

// CutOff reports whether the store was cut off from the leader at the
// monitor's last look.
func (s *Store) CutOff() bool { return s.cutOffNow() != nil }

// cutOffNow is why the store was cut off from the leader at the
// monitor's last look, nil when it was in contact.
func (s *Store) cutOffNow() error {
	s.contact.mu.Lock()
	defer s.contact.mu.Unlock()
	return s.contact.lost
}

// watchContact starts the monitor that keeps s.contact up to date,
// after a first look, until the store stops. Until its first contact a
// store is cut off.
func (s *Store) watchContact() {
	c := &s.contact
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	s.probes.kick = make(chan []string, 1)
	s.wg.Add(1)
	go s.runVoterProbes()
	s.lookAtContact(time.Now())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(contactPoll)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				c.mu.Lock()
				c.closed = true
				c.cancel(ErrShuttingDown)
				c.mu.Unlock()
				return
			case now := <-t.C:
				s.lookAtContact(now)
			}
		}
	}()
}

// lookAtContact records whether the store is in contact with a leader at
// now, ending the contact's context when it is lost, starting a new one
// when it returns, and logging both.
func (s *Store) lookAtContact(now time.Time) {
	s.contact.mu.Lock()
	defer s.contact.mu.Unlock()
	s.lookAtContactLocked(now)
}

// lookAtContactLocked is lookAtContact with s.contact.mu held.
func (s *Store) lookAtContactLocked(now time.Time) {
	c := &s.contact
	if c.closed {
		return
	}
	leader := s.raft.State() == raft.Leader
	if leader {
		c.ledAt = now
	}
	if s.cfg.Lost != nil {
		if lost := s.cfg.Lost(); lost > c.lostSeen {
			c.lostSeen, c.resumedAt = lost, now
		}
	}
	s.forgetRemovedPeers()
	commit, heard := s.transport.LeaderCommit()
	// Raft's own commit index: a leader's, or what a follower (or a
	// leader deposed while its Raft waited for the stuck replica) has
	// committed; the commit index a leader sent is another leader's.
	commit = max(commit, s.raft.CommitIndex())
	stall := s.applyStall(now, commit)
	lost := cutOff(now, leader, heard, c.ledAt, s.cfg.StaleReadBound)
	if lost == nil && !leader {
		if why := s.isolated(now, c.resumedAt); why != "" {
			lost = &contactLoss{why: why}
		}
	}
	// A stalled replica stays so until it applies again: once raft's
	// queue to the FSM is full, raft stops taking the leader's entries,
	// and the silence that follows is the stall's doing.
	stalled := stall != "" && (lost == nil || c.stalled)
	if stalled {
		lost = &contactLoss{why: stall}
	}
	s.logContact(lost, stalled, leader)
	s.leaderStall(now, leader, stall)
	switch {
	case lost != nil && c.lost == nil:
		c.cancel(lost)
	case lost == nil && c.lost != nil:
		c.ctx, c.cancel = context.WithCancelCause(context.Background())
	}
	c.lost, c.stalled = lost, stalled
	c.had = c.had || lost == nil
}

// logContact logs the store's loss of contact with a leader, its return,
// and a replica that stops (leader: as the leader) or resumes applying
// (stalled: lost is that), once each, once the store has been in contact
// since it opened. The caller holds s.contact.mu.
func (s *Store) logContact(lost error, stalled, leader bool) {
	c := &s.contact
	switch {
	case !c.had:
	case stalled && !c.stalled && leader:
		s.log.Error("this agent leads and its replica stopped applying the Raft log: no write can be answered; it hands its leadership to another voter, and if raft cannot (its queue to the replica is full) it stops sending AppendEntries and heartbeats until the replica applies again, so that the others elect a leader; watches that require a leader end, sessions are told; if it does not apply again, restart the agent",
			"err", lost)
	case stalled && !c.stalled:
		s.log.Warn("this replica stopped applying the Raft log while the leader goes on committing: watches that require a leader end, sessions are told, default reads refuse; if it does not apply again, restart the agent",
			"err", lost)
	case lost != nil && (c.lost == nil || c.stalled) && !stalled:
		s.log.Warn("cut off from the leader: writes fail at once, watches that require a leader end, sessions are told; default reads refuse once no leader has reached this agent for stale_read_bound",
			"err", lost)
	case lost == nil && c.stalled:
		s.log.Info("this replica applies the Raft log again: in contact with a leader again")
	case lost == nil && c.lost != nil:
		s.log.Info("in contact with a leader again")
	}
}

// A follower's Raft may go on receiving the leader's entries while its
// replica applies none (an apply waiting for the FSM's lock a stuck
// reader holds, a disk hung under a snapshot restore): its watches would
// then send progress notifications at a revision that never moves, and
// its sessions stay, while the registry moves on elsewhere. Such a
// follower counts as cut off once its replica has applied less than the
// leader's commit index it knows and its revision has not moved for
// StaleReadBound; a replica behind but applying (catching up after a
// restart or a partition) stays in contact.
//
// A leader whose replica stopped applying answers no write (a write is
// answered once the leader has applied it), and its Raft goes on
// committing the writes proposed to it. It counts as cut off the same
// way, its own commit index standing for the leader's, and hands its
// leadership on (leaderStall).

// applyStall is why the store is cut off because its replica stopped
// applying at now, commit the commit index it knows (a leader's own);
// "" if it is not. Time the process stood still (Config.Lost) does not
// count. The caller holds s.contact.mu.
func (s *Store) applyStall(now time.Time, commit uint64) string {
	c := &s.contact
	applied := s.fsm.Revision() // without the FSM's lock, which a stuck apply holds or waits for
	if applied >= commit || applied != c.applied || c.appliedAt.IsZero() {
		c.applied, c.appliedAt = applied, now
		return ""
	}
	still, stalled := silentFor(now, c.appliedAt, c.resumedAt, s.cfg.StaleReadBound)
	if !stalled {
		return ""
	}
	return fmt.Sprintf("this replica stopped applying: applied %d, the leader's commit index is %d, no progress for %s; reads and watches here are refused until it applies again (if it stays so, restart the agent)",
		applied, commit, still.Round(100*time.Millisecond))
}

// leaderStall has the store, leading at now with a replica that stopped
// applying (stall, from applyStall; "" if it did not), ask raft once to
// hand its leadership on, without waiting: raft's main loop takes the
// request only if it is not itself waiting for the stuck replica. If the
// store still leads handOnWait later, raft could not: it raises the
// transport's fence (transport.go), which stays up until the replica's
// revision moves, so that the followers, hearing no heartbeat, elect a
// leader. The caller holds s.contact.mu.
func (s *Store) leaderStall(now time.Time, leader bool, stall string) {
	c := &s.contact
	switch {
	case stall == "":
		c.handOnAt = time.Time{}
		s.transport.fence.lower()
	case !leader || s.transport.fence.up():
	case c.handOnAt.IsZero():
		c.handOnAt = now
		_ = s.raft.LeadershipTransfer() // answered by raft's main loop, if it runs
	case now.Sub(c.handOnAt) >= s.handOnWait():
		s.transport.fence.raise(c.applied, s.fsm.Revision)
		s.log.Warn("this agent still leads with a replica that applies nothing, raft did not hand the leadership on (its main loop waits for the replica): it sends no AppendEntries or heartbeats until the replica applies again, so that the other voters elect a leader",
			"applied", c.applied, "commit_index", s.raft.CommitIndex())
	}
}

// handOnWait is how long a leader whose replica stopped applying waits
// for raft to hand its leadership on before it raises the fence: raft
// gives a transfer an election timeout, and the new leader needs about
// one more to be elected and heard.
func (s *Store) handOnWait() time.Duration {
	return max(2*s.cfg.ElectionTimeout, contactPoll)
}

// cutOff returns why a store is cut off from the leader at now, nil when
// it is not: leader, it leads; heard, when a leader last replicated to
// it; ledAt, when it last led; bound, StaleReadBound.
func cutOff(now time.Time, leader bool, heard, ledAt time.Time, bound time.Duration) error {
	if leader {
		return nil
	}
	if ledAt.After(heard) {
		heard = ledAt
	}
	if heard.IsZero() {
		return &contactLoss{why: "no leader has replicated its log to this agent since it started"}
	}
	if age := now.Sub(heard); age > bound {
		return &contactLoss{why: fmt.Sprintf("the leader last replicated its log to this agent %s ago (stale_read_bound %s)",
			age.Round(100*time.Millisecond), bound)}
	}
	return nil
}

// contactLoss is why a store is cut off from the leader: an ErrStaleRead
// to reads and watches, the reason alone in a write's ErrNoLeader.
type contactLoss struct{ why string }

func (e *contactLoss) Error() string { return ErrStaleRead.Error() + ": " + e.why }
func (e *contactLoss) Unwrap() error { return ErrStaleRead }

// contactLost is why the store, in contact with a leader at some time
// since it opened, is cut off from it now and knows no leader; "" if it
// is not, knows a leader (one reached it, and a forwarded call may reach
// it too), or has never been in contact (it may be joining). The store
// looks again first. Writes (Forwarder) fail at once on such a
// store.
func (s *Store) contactLost() string {
	if _, id := s.Leader(); id != "" {
		return ""
	}
	c := &s.contact
	c.mu.Lock()
	defer c.mu.Unlock()
	s.lookAtContactLocked(time.Now())
	if loss, ok := c.lost.(*contactLoss); ok && c.had {
		return loss.why
	}
	return ""
}

// A voter that is cut off from a quorum knows it long before
// StaleReadBound: in an election, every voter that can reach another hears
// a vote request from it, or an answer to its own (each voter that knows
// no leader campaigns, pre-vote first, every one to two election
// timeouts), and a leader's heartbeats come many times a heartbeat
// timeout. A voter that knows no leader and has heard no Raft message or
// answer, for isolationBound (isolationTimeouts heartbeat timeouts, or two
// election timeouts and one heartbeat timeout, at least minIsolation),
// from enough other voters to make a quorum with it therefore cannot be
// part of one: it is on a minority
// side of a partition, or the others are down. A deposed leader cut off
// from the others (it stepped down when its lease ran out), a follower
// behind a partition, and two agents of five cut off together so count as
// cut off a second or so into the cut, not StaleReadBound (5 s) into it,
// while a write during an election that will succeed waits for it; etcd
// ends its watches that require a leader after three election timeouts
// without one in the same way. Reads keep StaleReadBound, the staleness
// an operator allows. A non-voter hears nothing during an election: it
// asks the voters instead (probe.go), and counts their answers the same
// way.
const (
	isolationTimeouts = 3
	minIsolation      = time.Second
)

// isolationBound is how long a peer may go unheard by a store that knows
// no leader before it stops counting towards a quorum with it: the
// longest silence between a live peer's campaign rounds (raft waits a
// random one to two election timeouts between a candidate's rounds, and
// the election timeout may be set well above the heartbeat timeout) with
// a heartbeat timeout to spare, isolationTimeouts heartbeat timeouts, at
// least minIsolation.
func (s *Store) isolationBound() time.Duration {
	return max(isolationTimeouts*s.cfg.HeartbeatTimeout, 2*s.cfg.ElectionTimeout+s.cfg.HeartbeatTimeout, minIsolation)
}

// isolated is why the store, a voter with other voters or a non-voter,
// that knows no leader counts itself cut off from any quorum at now; ""
// if it is not, or has never heard from a peer. Silence before resumed
// (the process stood still) does not count.
func (s *Store) isolated(now, resumed time.Time) string {
	bound := s.isolationBound()
	others, voter := s.otherVoters()
	if !voter {
		return s.nonVoterIsolated(now, resumed, others, bound)
	}
	s.contact.noLeaderSince = time.Time{}
	anyPeer := s.transport.peers.latest()
	if anyPeer.IsZero() || len(others) == 0 {
		return ""
	}
	reached := 1 + s.heardWithin(others, now, resumed, bound) // itself and the others heard
	need := (len(others)+1)/2 + 1
	if reached >= need {
		return ""
	}
	if _, id := s.Leader(); id != "" {
		return ""
	}
	if reached == 1 {
		silent, _ := silentFor(now, anyPeer, resumed, bound)
		return fmt.Sprintf("no other voter has sent this agent a Raft message or answered one for %s",
			silent.Round(100*time.Millisecond))
	}
	return fmt.Sprintf("only %d of the %d other voters have sent this agent a Raft message or answered one within %s; a quorum with it needs %d",
		reached-1, len(others), bound, need-1)
}

// nonVoterIsolated is isolated for a non-voter of the given voters: it
// asks them while it knows no leader (probe.go; without a VoterProbe it
// is never isolated), and counts itself cut off once it has asked for
// probeTimeout and fewer than a majority of them have sent it a Raft
// message or answered within bound. The caller holds s.contact.mu.
func (s *Store) nonVoterIsolated(now, resumed time.Time, voters []string, bound time.Duration) string {
	c := &s.contact
	if _, id := s.Leader(); id != "" || len(voters) == 0 || s.transport.peers.latest().IsZero() || s.probes.probe.Load() == nil {
		c.noLeaderSince = time.Time{}
		return ""
	}
	if c.noLeaderSince.IsZero() {
		c.noLeaderSince = now
	}
	s.askVoters(voters)
	if now.Sub(c.noLeaderSince) < probeTimeout {
		return ""
	}
	reached := s.heardWithin(voters, now, resumed, bound)
	need := len(voters)/2 + 1
	switch {
	case reached >= need:
		return ""
	case reached == 0:
		return fmt.Sprintf("it is a nonvoter that knows no leader, and none of the %d voters has sent it a Raft message or answered it within %s",
			len(voters), bound)
	}
	return fmt.Sprintf("it is a nonvoter that knows no leader, and only %d of the %d voters have sent it a Raft message or answered it within %s, fewer than the %d a leader needs",
		reached, len(voters), bound, need)
}

// heardWithin counts the peers of ids that have sent this store a Raft
// message or answered one (or a probe) within bound of now, silence
// before resumed not counting (silentFor).
func (s *Store) heardWithin(ids []string, now, resumed time.Time, bound time.Duration) int {
	n := 0
	for _, id := range ids {
		if _, silent := silentFor(now, s.transport.peers.last(id), resumed, bound); !silent {
			n++
		}
	}
	return n
}

// silentFor returns how long a peer has not been heard at now, and
// whether that, counted from resumed if that is later, reaches bound. A
// peer never heard (zero) is silent once bound has passed since resumed.
func silentFor(now, heard, resumed time.Time, bound time.Duration) (time.Duration, bool) {
	from := heard
	if resumed.After(from) {
		from = resumed
	}
	return now.Sub(heard), now.Sub(from) >= bound
}

// otherVoters returns the voters of the latest Raft configuration other
// than this store, and whether this store is one.
func (s *Store) otherVoters() (others []string, voter bool) {
	for _, srv := range s.raft.GetConfiguration().Configuration().Servers {
		if srv.Suffrage != raft.Voter {
			continue
		}
		if string(srv.ID) == s.cfg.NodeID {
			voter = true
		} else {
			others = append(others, string(srv.ID))
		}
	}
	return others, voter
}
