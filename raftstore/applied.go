package raftstore

import (
	"time"

	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/internal/monotime"
)

// Raft never hands no-op entries (one per new leader) or barriers to a
// batching FSM, so the FSM's revision alone stays below the commit index
// after a leader change until the next command: a follower waiting for
// the leader's commit index (WaitRevision) would wait for a write that may
// never come. The store therefore moves the FSM's revision over such
// entries once raft has applied them.
//
// raft's AppliedIndex counts an entry once it is handed to the FSM
// goroutine, not once the FSM has applied it, so it cannot be used as the
// FSM's revision directly: only when the FSM has applied everything up to
// its revision and every entry after it up to the applied index is one
// the FSM never sees is the state the same as at the applied index.

// How often the store looks for entries to move over: every appliedPoll
// while some may come, that is for appliedBusy after a kick (a leadership
// change this store saw, a reader that waits for a revision the replica
// has not reached, or entries just moved over), and every
// Store.appliedIdle otherwise. An idle agent so wakes for this once a
// second, not a hundred times (about 1.5 % of a core on the 2-core
// machines of docs/benchmarks.md).
const (
	appliedPoll     = 10 * time.Millisecond
	appliedBusy     = 2 * time.Second
	appliedIdlePoll = time.Second
)

// maxSkip bounds the entries read from the log in one look.
const maxSkip = 256

// trackApplied runs until the store stops.
func (s *Store) trackApplied() {
	defer s.wg.Done()
	leaders := make(chan raft.Observation, 4)
	obs := raft.NewObserver(leaders, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	s.raft.RegisterObserver(obs)
	defer s.raft.DeregisterObserver(obs)
	busy := func() { s.appliedBusyUntil.Store(monotime.Of(time.Now().Add(appliedBusy))) }
	busy()
	t := time.NewTimer(appliedPoll)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-leaders:
			busy()
		case <-s.appliedKick:
			busy()
		case <-t.C:
		}
		s.appliedLooks.Add(1)
		if s.skipNonFSMEntries() {
			busy()
		}
		wait := s.appliedIdle
		if monotime.Now() < s.appliedBusyUntil.Load() {
			wait = appliedPoll
		}
		t.Reset(wait)
	}
}

// kickApplied has trackApplied look often for a while, unless it does
// already; the FSM calls it when a reader waits for a revision.
func (s *Store) kickApplied() {
	if monotime.Now() < s.appliedBusyUntil.Load() {
		return
	}
	select {
	case s.appliedKick <- struct{}{}:
	default:
	}
}

// skipNonFSMEntries moves the FSM's revision over the applied entries that
// follow it and never reach the FSM, and has the commit pusher tell
// followers (a new leader's no-op and barrier are committed without any
// write to carry them). It reports whether it moved the revision.
func (s *Store) skipNonFSMEntries() bool {
	from := s.fsm.Revision()
	to := skippableTo(s.logs, from, s.raft.AppliedIndex())
	if to <= from {
		return false
	}
	s.fsm.skipTo(from, to)
	var l raft.Log
	if err := s.logs.GetLog(to, &l); err == nil {
		s.pusher.committed(to, l.Term)
	}
	return true
}

// skippableTo returns the last index after from, up to applied, such that
// no entry in between reaches the FSM; from if there is none.
func skippableTo(logs raft.LogStore, from, applied uint64) uint64 {
	to := from
	for idx := from + 1; idx <= applied && idx <= from+maxSkip; idx++ {
		var l raft.Log
		if err := logs.GetLog(idx, &l); err != nil || reachesFSM(l.Type) {
			break // compacted into a snapshot, or the FSM has yet to apply it
		}
		to = idx
	}
	return to
}

// reachesFSM reports whether raft hands entries of type t to a batching FSM.
func reachesFSM(t raft.LogType) bool {
	return t == raft.LogCommand || t == raft.LogConfiguration
}

// skipTo moves the revision from from to to, which the caller has checked
// holds only entries that do not change the state. It does nothing if the
// revision is no longer from (the FSM applied or restored meanwhile).
// Waiters wake; watchers get no events.
func (f *FSM) skipTo(from, to uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.revision != from || to <= from {
		return
	}
	f.revision = to
	f.applied.Store(to)
	f.events.append(nil, to)
}
