package raftstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/internal/monotime"
)

// A CONSISTENT read on the leader must see every write acknowledged before
// it began, so the leader must know it was still the leader after the read
// began. raft's VerifyLeader alone does not prove that: it counts every
// successful AppendEntries answer raft processes after the verification
// registers, including answers to requests sent before the read began. A
// leader that was paused (a stopped process, a long GC pause, a starved
// VM) while the other voters elected a new leader and committed writes
// finds its followers' answers from before the pause waiting in its
// sockets when it resumes, and a read that arrived meanwhile is verified
// on them and answers from the old state. VerifyLeader also counts the
// answers of nonvoters, which are no part of any quorum.
//
// The store therefore records, per peer, when it sent the newest
// AppendEntries request of its term that the peer accepted, and a
// CONSISTENT read also waits until the leader and enough voters to make a
// quorum have accepted requests sent after it began: etcd's ReadIndex
// rule. A follower that accepted a request of term T after the read began
// had seen no later term then; a majority of such followers means no
// later leader had committed anything before the read began.
//
// The same record bounds a leader's DEFAULT reads: it serves them only
// while a quorum of voters accepted requests it sent within
// StaleReadBound, as a follower serves them only while the leader's
// commit index reached it within the bound.

// peerAck is the newest AppendEntries request a peer accepted: its term
// and when the leader sent it.
type peerAck struct {
	term uint64
	sent time.Time
}

// leaderAcks records the AppendEntries requests peers accepted. The zero
// value is ready to use.
type leaderAcks struct {
	mu   sync.Mutex
	acks map[raft.ServerID]peerAck
	// changed is closed, and replaced, when an ack is recorded.
	changed chan struct{}
}

// accepted records that peer id accepted a request of term sent at sent.
// Requests of an older term than one the peer accepted before are
// ignored, as are older sends of the same term (pipelined answers may
// arrive in any order with the heartbeats').
func (a *leaderAcks) accepted(id raft.ServerID, term uint64, sent time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.acks == nil {
		a.acks = make(map[raft.ServerID]peerAck)
	}
	old, ok := a.acks[id]
	if ok && (term < old.term || (term == old.term && !sent.After(old.sent))) {
		return
	}
	a.acks[id] = peerAck{term: term, sent: sent}
	if a.changed != nil {
		close(a.changed)
		a.changed = nil
	}
}

// latest returns when the newest request peer id accepted was sent (of
// whatever term); zero if it accepted none. The leader's count of voters
// not answering it goes by it (failingPeer.counts).
func (a *leaderAcks) latest(id raft.ServerID) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.acks[id].sent
}

// retain forgets the peers member rejects: servers that left the
// configuration (Store.forgetRemovedPeers).
func (a *leaderAcks) retain(member func(raft.ServerID) bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id := range a.acks {
		if !member(id) {
			delete(a.acks, id)
		}
	}
}

// confirmed reports whether self and the voters among servers that
// accepted requests of term sent at or after since make a majority of the
// voters. When they do not, it also returns a channel closed at the next
// recorded ack.
func (a *leaderAcks) confirmed(self raft.ServerID, servers []raft.Server, term uint64, since time.Time) (bool, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	voters, n := 0, 0
	for _, srv := range servers {
		if srv.Suffrage != raft.Voter {
			continue
		}
		voters++
		if srv.ID == self {
			n++
			continue
		}
		if ack, ok := a.acks[srv.ID]; ok && ack.term == term && !ack.sent.Before(since) {
			n++
		}
	}
	if n > voters/2 {
		return true, nil
	}
	if a.changed == nil {
		a.changed = make(chan struct{})
	}
	return false, a.changed
}

// leadershipPoll is how often a read waiting for its quorum looks whether
// this node still leads: raft steps down on a newer term without telling
// the waiting read.
const leadershipPoll = 10 * time.Millisecond

var (
	// errLostLeadership: this store no longer leads in the read's term.
	errLostLeadership = errors.New("leadership lost")
	// errNoQuorum: no quorum of voters answered in time.
	errNoQuorum = errors.New("no quorum of voters answered")
)

// ReadIndex returns this leader's read index: its commit index when the
// call began, once it has confirmed that it still led after that and has
// applied everything committed before it took over. A replica that has
// applied the read index sees every write acknowledged before the call
// began. ErrNotLeader on a follower.
func (s *Store) ReadIndex(ctx context.Context) (uint64, error) {
	start, term := time.Now(), s.raft.CurrentTerm()
	if s.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	commit := s.raft.CommitIndex()
	if err := s.confirmLeadership(ctx, term, start); err != nil {
		return 0, err
	}
	s.mu.Lock()
	ready := s.leaderReady
	s.mu.Unlock()
	if !ready {
		return 0, fmt.Errorf("%w: new leader is still catching up", ErrNoLeader)
	}
	// A new leader's commit index may lag what its predecessor committed
	// until its barrier commits; it has applied that barrier once ready.
	return max(commit, s.fsm.Revision()), nil
}

// SetReadIndexSource sets where a follower that did not run for a while
// gets the leader's read index (Forwarder.ReadIndex); until it is set,
// such a follower refuses DEFAULT reads after a stall.
func (s *Store) SetReadIndexSource(f func(ctx context.Context) (uint64, error)) {
	s.readIndexFrom.Store(&f)
}

// catchUpAfterStall makes a follower that did not run for a while
// (Config.Lost grew) wait, before it serves DEFAULT reads again, until its
// replica has applied the leader's read index fetched after the stall.
// The AppendEntries requests it reads on waking may have been sent before
// it stopped; their arrival, stamped when they are read, says nothing of
// how old the commit index they carry is, and the bound of DEFAULT reads
// would not hold.
func (s *Store) catchUpAfterStall(ctx context.Context) error {
	if s.cfg.Lost == nil || s.cfg.Lost() <= time.Duration(s.stallCleared.Load()) {
		return nil
	}
	s.stallMu.Lock()
	defer s.stallMu.Unlock()
	lost := s.cfg.Lost()
	if lost <= time.Duration(s.stallCleared.Load()) {
		return nil // another read caught up meanwhile
	}
	asked := time.Now()
	from := s.readIndexFrom.Load()
	if from == nil {
		return fmt.Errorf("%w: this agent did not run for a while (%s in all) and cannot ask the leader how far to catch up yet; retry, or read with consistency=stale",
			ErrStaleRead, lost.Round(time.Millisecond))
	}
	if err := s.catchUpToReadIndex(ctx, *from, fmt.Sprintf("this agent did not run for a while (%s in all)", lost.Round(time.Millisecond))); err != nil {
		return err
	}
	s.stallCleared.Store(int64(lost))
	// The read index, asked after any silence that ended before, covers
	// that too (catchUpAfterSilence).
	s.silenceCleared.Store(monotime.Of(asked))
	return nil
}

// catchUpAfterSilence is catchUpAfterStall for a silence of the leader's
// rather than of this agent: when the leader's commit index reaches a
// follower again after longer than StaleReadBound without it (a partition
// healed, a connection's queued requests delivered late), the requests
// that end the silence may have been sent before or during it, and carry
// a commit index older than their arrival says. The follower then waits,
// once, until its replica has applied the leader's read index fetched
// after the silence ended, before it serves DEFAULT reads again (with a
// read-index source: SetReadIndexSource, which every agent sets).
func (s *Store) catchUpAfterSilence(ctx context.Context) error {
	resumed := s.transport.commits.resumedAt()
	if resumed.IsZero() || monotime.Of(resumed) <= s.silenceCleared.Load() {
		return nil
	}
	s.stallMu.Lock()
	defer s.stallMu.Unlock()
	if monotime.Of(resumed) <= s.silenceCleared.Load() {
		return nil // another read caught up meanwhile
	}
	from := s.readIndexFrom.Load()
	if from == nil {
		// A store used without a Forwarder has no way to ask: it goes by
		// the commit index that arrives, as it did before the silence.
		return nil
	}
	asked := time.Now()
	if err := s.catchUpToReadIndex(ctx, *from, "the leader's commit index reaches this agent again after a silence"); err != nil {
		return err
	}
	s.silenceCleared.Store(monotime.Of(asked))
	return nil
}

// catchUpToReadIndex asks the leader for its read index through from and
// waits until the replica has applied it; why, what made the read ask,
// begins its errors.
func (s *Store) catchUpToReadIndex(ctx context.Context, from func(context.Context) (uint64, error), why string) error {
	index, err := from(ctx)
	if err != nil {
		return fmt.Errorf("%w: %s, and asking the leader how far to catch up failed: %v; retry, or read with consistency=stale",
			ErrStaleRead, why, err)
	}
	if err := s.fsm.WaitRevision(ctx, index); err != nil {
		behind := index - min(index, s.fsm.Revision())
		return fmt.Errorf("%w: %s, and its replica is %d entries behind the leader's read index %d; retry, or read with consistency=stale",
			ErrStaleRead, why, behind, index)
	}
	return nil
}

// confirmLeadership returns nil once this store has confirmed that it
// led in term after start: raft verifies its leadership with a quorum
// (which also sends every peer a heartbeat now), then the read waits, up
// to defaultReadWait or until ctx ends, until a quorum of voters accepted
// requests sent at or after start. It returns ErrNotLeader (forward) when
// this store no longer leads in term.
func (s *Store) confirmLeadership(ctx context.Context, term uint64, start time.Time) error {
	if err := s.wait(ctx, s.raft.VerifyLeader()); err != nil {
		return RaftError(err)
	}
	switch err := s.waitAcks(ctx, term, start, time.Now().Add(defaultReadWait)); {
	case errors.Is(err, errLostLeadership):
		return fmt.Errorf("%w: leadership lost while confirming it for a read", ErrNotLeader)
	case errors.Is(err, errNoQuorum):
		return fmt.Errorf("%w: a quorum of voters did not answer this leader within %v of the read; retry", ErrNoLeader, defaultReadWait)
	default:
		return err
	}
}

// leaderHeard returns nil once a quorum of voters has accepted requests
// of term this leader sent within StaleReadBound, the bound of a DEFAULT
// read: a leader cut off, or paused, for longer may have been deposed and
// its replica left behind. It waits until ctx ends; errLostLeadership when
// this store no longer leads in term.
func (s *Store) leaderHeard(ctx context.Context, term uint64) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultReadWait)
	}
	err := s.waitAcks(ctx, term, time.Now().Add(-s.cfg.StaleReadBound), deadline)
	if errors.Is(err, errNoQuorum) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: no quorum of voters has answered this leader within %s; it may have been deposed; retry, or read with consistency=stale to use its replica anyway",
			ErrStaleRead, s.cfg.StaleReadBound)
	}
	return err
}

// waitAcks returns nil once the leader and the voters that accepted
// requests of term sent at or after since make a quorum; errLostLeadership
// when this store no longer leads in term, errNoQuorum at deadline.
func (s *Store) waitAcks(ctx context.Context, term uint64, since, deadline time.Time) error {
	var poll *time.Ticker
	for {
		servers := s.raft.GetConfiguration().Configuration().Servers
		ok, changed := s.transport.acks.confirmed(raft.ServerID(s.cfg.NodeID), servers, term, since)
		if ok {
			return nil
		}
		if s.raft.CurrentTerm() != term || s.raft.State() != raft.Leader {
			return errLostLeadership
		}
		if poll == nil {
			poll = time.NewTicker(leadershipPoll)
			defer poll.Stop()
		}
		select {
		case <-changed:
		case <-poll.C:
			if time.Now().After(deadline) {
				return errNoQuorum
			}
		case <-ctx.Done():
			return fmt.Errorf("confirming leadership for a read: %w", ctx.Err())
		case <-s.stop:
			return ErrShuttingDown
		}
	}
}
