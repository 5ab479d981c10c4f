package raftstore

import (
	"testing"
	"time"
)

// TestLeaderCountsAVoterNotAnsweringItsHeartbeatsUnreachable: a voter
// that gossip counts alive but that does not answer the leader's
// heartbeats (here: stopped) is unreachable in the leader's Quorum,
// "not answering the leader", since it was last heard from; a voter that
// answers again, or whose failure is older than any heartbeat of a
// failing peer would be, is not.
func TestLeaderCountsAVoterNotAnsweringItsHeartbeatsUnreachable(t *testing.T) {
	stores := openCluster(t, 3)
	leader := stores[0]
	alive := func(string) Reach { return Reach{Alive: true} }
	if q, err := leader.Quorum(alive); err != nil || len(q.Unreachable) != 0 {
		t.Fatalf("Quorum with every voter answering = %+v, %v; want none unreachable", q, err)
	}
	// n3 answers heartbeats until its Close has returned.
	stores[2].Close()
	stopped := time.Now()
	var q Quorum
	eventually(t, 20*time.Second, "the leader counts n3 unreachable", func() bool {
		var err error
		q, err = leader.Quorum(alive)
		return err == nil && len(q.Unreachable) == 1
	})
	u := q.Unreachable[0]
	if u.ID != "n3" || u.Status != notAnsweringLeader || u.Since.IsZero() || u.Since.After(stopped) {
		t.Fatalf("unreachable %+v, want n3 %q since it was last heard from, before %v", u, notAnsweringLeader, stopped)
	}
	if q.Reachable() != 2 || q.Lost() {
		t.Fatalf("Quorum %+v: want 2 of 3 reachable, not lost", q)
	}
	// Gossip's word comes first: a voter it says failed keeps its status.
	failed := func(id string) Reach {
		if id == "n3" {
			return Reach{Status: "failed"}
		}
		return Reach{Alive: true}
	}
	if q, _ := leader.Quorum(failed); len(q.Unreachable) != 1 || q.Unreachable[0].Status != "failed" {
		t.Fatalf("Quorum with gossip saying n3 failed = %+v, want n3 failed", q)
	}

	leader.heartbeatResumed("n3")
	if q, _ := leader.Quorum(alive); len(q.Unreachable) != 0 {
		t.Fatalf("after n3's heartbeats resumed, Quorum = %+v, want none unreachable", q)
	}
	// A failure no heartbeat has repeated for failureFresh (raft stopped
	// reporting it) no longer counts. (Of n9, which has never answered:
	// n2's answers since would end the failure at once.)
	now := time.Now()
	leader.heartbeatFailed("n9", time.Time{}, now.Add(-failureFresh))
	if _, failing := leader.notAnswering("n9", now); failing {
		t.Fatal("a failure older than failureFresh still counts")
	}
	if _, failing := leader.notAnswering("n9", now.Add(-time.Second)); !failing {
		t.Fatal("a failure within failureFresh does not count")
	}
	// A follower does not count anyone: its heartbeats are the leader's.
	if _, failing := stores[1].notAnswering("n3", now); failing {
		t.Fatal("a follower counts a voter not answering its heartbeats")
	}
}
