package raftstore

import (
	"time"

	"github.com/hashicorp/raft"
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

// appliedPoll is how often the store looks for entries to move over.
const appliedPoll = 10 * time.Millisecond

// maxSkip bounds the entries read from the log in one look.
const maxSkip = 256

// trackApplied runs until the store stops.
func (s *Store) trackApplied() {
	defer s.wg.Done()
	t := time.NewTicker(appliedPoll)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.skipNonFSMEntries()
		}
	}
}

// skipNonFSMEntries moves the FSM's revision over the applied entries that
// follow it and never reach the FSM, and has the commit pusher tell
// followers (a new leader's no-op and barrier are committed without any
// write to carry them).
func (s *Store) skipNonFSMEntries() {
	from := s.fsm.Revision()
	if to := skippableTo(s.logs, from, s.raft.AppliedIndex()); to > from {
		s.fsm.skipTo(from, to)
		var l raft.Log
		if err := s.logs.GetLog(to, &l); err == nil {
			s.pusher.committed(to, l.Term)
		}
	}
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
	f.events.append(nil, to)
}
