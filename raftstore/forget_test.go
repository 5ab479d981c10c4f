package raftstore

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// sizes returns how many followers p keeps and how many sender
// goroutines run.
func (p *commitPusher) sizes() (followers, senders int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.followers), p.senders
}

// TestCommitPusherForgetsFollowersThatLeftTheConfiguration: the pusher
// keeps a record and a sender goroutine per follower it replicated to;
// once the configuration no longer holds a follower, both go, and a
// follower that comes back under the same id is pushed to again.
func TestCommitPusherForgetsFollowersThatLeftTheConfiguration(t *testing.T) {
	f := &fakeFollowers{}
	var term atomic.Uint64
	term.Store(2)
	p := newTestPusher(t, f, &term)
	const n = 50
	for i := range n {
		replicate(p, raft.ServerID(fmt.Sprintf("nonvoter-%d", i)), 2, 0, 1, 5, 0)
	}
	replicate(p, "n2", 2, 0, 1, 5, 0)
	if fs, ss := p.sizes(); fs != n+1 || ss != n+1 {
		t.Fatalf("after %d followers: %d records, %d senders", n+1, fs, ss)
	}

	p.retain(func(id raft.ServerID) bool { return id == "n2" })
	eventually(t, 5*time.Second, "the forgotten followers' senders to stop", func() bool {
		fs, ss := p.sizes()
		return fs == 1 && ss == 1
	})

	// Pushes go to the follower kept and to one back under its old id.
	replicate(p, "nonvoter-7", 2, 0, 1, 5, 0)
	if fs, ss := p.sizes(); fs != 2 || ss != 2 {
		t.Fatalf("after nonvoter-7 came back: %d records, %d senders, want 2 and 2", fs, ss)
	}
	p.committed(5, 2)
	checkPushed(t, f, 2, map[raft.ServerID][]uint64{"n2": {5}, "nonvoter-7": {5}})
}

// TestLeaderForgetsPeersThatLeftTheConfiguration: what the leader keeps
// per peer (commit push senders, accepted requests, failed heartbeats) of
// peers no longer in the Raft configuration is dropped at the next
// configuration change.
func TestLeaderForgetsPeersThatLeftTheConfiguration(t *testing.T) {
	s := openStore(t, New(testStoreConfig(t, t.TempDir(), slog.LevelWarn)))
	term := s.raft.CurrentTerm()
	const n = 20
	for i := range n {
		id := raft.ServerID(fmt.Sprintf("reaped-%d", i))
		replicate(s.pusher, id, term, 0, 1, 1, 0)
		s.transport.acks.accepted(id, term, time.Now())
		s.heartbeatFailed(string(id), time.Time{}, time.Now())
	}
	// kept counts the reaped peers' records.
	kept := func() (pushed, acked, failing int) {
		reaped := func(id string) bool { return strings.HasPrefix(id, "reaped-") }
		s.pusher.mu.Lock()
		for id := range s.pusher.followers {
			if reaped(string(id)) {
				pushed++
			}
		}
		s.pusher.mu.Unlock()
		s.transport.acks.mu.Lock()
		for id := range s.transport.acks.acks {
			if reaped(string(id)) {
				acked++
			}
		}
		s.transport.acks.mu.Unlock()
		s.heartbeats.mu.Lock()
		for id := range s.heartbeats.failing {
			if reaped(id) {
				failing++
			}
		}
		s.heartbeats.mu.Unlock()
		return pushed, acked, failing
	}
	if p, a, f := kept(); p != n || a != n || f != n {
		t.Fatalf("before any change: %d pushed to, %d acked, %d failing; want %d of each", p, a, f, n)
	}

	// Any change prunes: here a nonvoter that never answers is added.
	if err := s.raft.AddNonvoter("n9", "127.0.0.1:1", 0, 5*time.Second).Error(); err != nil {
		t.Fatalf("add n9: %v", err)
	}
	eventually(t, 5*time.Second, "the reaped peers forgotten", func() bool {
		p, a, f := kept()
		return p+a+f == 0
	})
	// n9 never answers, so it has no sender of its own.
	eventually(t, 5*time.Second, "the reaped peers' senders to stop", func() bool {
		_, ss := s.pusher.sizes()
		return ss == 0
	})
}

// TestHeartbeatFailureHandledAfterItsResumeDoesNotCount: raft's failed
// and resumed heartbeats come through two observers; a failure handled
// after the resume that ended it, or whose resume raft dropped, does not
// count the voter as not answering, while a failure after its answer
// does.
func TestHeartbeatFailureHandledAfterItsResumeDoesNotCount(t *testing.T) {
	s := openStore(t, New(testStoreConfig(t, t.TempDir(), slog.LevelWarn)))
	term := s.raft.CurrentTerm()
	base := time.Now()
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }

	// raft last heard from n2 at 0 and failed a heartbeat; n2 accepted
	// the heartbeat sent at 10 (raft reports it resumed). The resume is
	// handled first, the failure at 20.
	s.transport.acks.accepted("n2", term, at(10))
	s.heartbeatResumed("n2")
	s.heartbeatFailed("n2", at(0), at(20))
	if since, failing := s.notAnswering("n2", at(20)); failing {
		t.Fatalf("a failure handled after the resume that ended it counts n2 not answering since %v", since)
	}

	// A failure after its answer (raft's last contact 12, after the
	// heartbeat of 10) counts, since then.
	s.heartbeatFailed("n2", at(12), at(30))
	if since, failing := s.notAnswering("n2", at(30)); !failing || !since.Equal(at(12)) {
		t.Fatalf("a failure after n2's last answer: notAnswering = %v, %v; want since %v", since, failing, at(12))
	}

	// n2 answers again and raft's resume is lost: it answers.
	s.transport.acks.accepted("n2", term, at(40))
	if since, failing := s.notAnswering("n2", at(50)); failing {
		t.Fatalf("n2 accepted a request after its failure and still counts not answering since %v", since)
	}

	// Its next failure begins a new run: since its latest answer, not
	// the earlier run's.
	s.heartbeatFailed("n2", at(45), at(60))
	if since, failing := s.notAnswering("n2", at(60)); !failing || !since.Equal(at(45)) {
		t.Fatalf("a new failure of n2: notAnswering = %v, %v; want since %v", since, failing, at(45))
	}
}

// TestPeersHeardForgetPeersThatLeftTheConfiguration: when each peer was
// last heard (isolation, contact.go) is kept for the peers of the
// configuration only: on every store, not only the leader, an entry per
// agent ever heard, reaped ones back under new names included, stayed.
func TestPeersHeardForgetPeersThatLeftTheConfiguration(t *testing.T) {
	s := openStore(t, New(testStoreConfig(t, t.TempDir(), slog.LevelWarn)))
	for i := range 20 {
		s.transport.peers.note([]byte(fmt.Sprintf("reaped-%d", i)), time.Now())
	}
	s.transport.peers.note([]byte("n9"), time.Now())
	if err := s.raft.AddNonvoter("n9", "127.0.0.1:1", 0, 5*time.Second).Error(); err != nil {
		t.Fatalf("add n9: %v", err)
	}
	eventually(t, 5*time.Second, "the reaped peers forgotten", func() bool {
		return s.transport.peers.last("reaped-0").IsZero() && s.transport.peers.last("reaped-19").IsZero()
	})
	if s.transport.peers.last("n9").IsZero() {
		t.Fatal("n9, in the configuration, was forgotten too")
	}
}
