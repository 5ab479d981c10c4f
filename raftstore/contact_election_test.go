package raftstore

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestVoterNotCutOffBetweenTheRoundsOfALongElection: with
// raft_election_timeout (3 s) far above the heartbeat timeout (100 ms), a
// candidate waits 3-6 s between its rounds. n2 and n3 are a quorum once
// the leader n1 stops, and n2 wins in a later round (its vote gate
// refuses n3, as for a log behind its own), but between rounds it hears
// from nobody for longer than three heartbeat timeouts: it called itself
// cut off, and a write on it failed at once, marked not applied, though
// the election it would have waited for succeeded. The isolation bound
// now covers two election timeouts.
func TestVoterNotCutOffBetweenTheRoundsOfALongElection(t *testing.T) {
	stores := openCluster(t, 3, func(i int, cfg *Config) {
		cfg.StaleReadBound = time.Hour
		cfg.ElectionTimeout = 3 * time.Second
		if i == 2 {
			cfg.HeartbeatTimeout = 300 * time.Millisecond // n3 notices the loss after n2
		}
	})
	n1, n2 := stores[0], stores[1]
	if l := leaderOf(t, stores); l != n1 {
		if err := l.raft.LeadershipTransferToServer(raft.ServerID(n1.cfg.NodeID), raft.ServerAddress(n1.RaftAddr())).Error(); err != nil {
			t.Fatalf("leadership to n1: %v", err)
		}
	}
	eventually(t, 20*time.Second, "n1 leads", n1.IsLeader)
	for _, s := range stores {
		eventually(t, 10*time.Second, s.cfg.NodeID+" in contact", func() bool { return !s.CutOff() })
	}
	n2.LearnCommitted(n2.raft.LastIndex() + 1) // n2 refuses n3's candidacy
	n1.Close()
	start := time.Now()

	f := NewForwarder(n2, ForwardConfig{LeaderWait: 20 * time.Second, Dial: newTestDialer(t).dial})
	applyErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
		defer cancel()
		_, err := f.Apply(ctx, registerCmd(testInstance("api", "0", "n2")))
		applyErr <- err
	}()
	var cut error
	var cutAt time.Duration
	for time.Since(start) < 20*time.Second && !n2.IsLeader() {
		if err := n2.cutOffNow(); err != nil && cut == nil {
			cut, cutAt = err, time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	elected := time.Since(start)
	if !n2.IsLeader() {
		t.Fatalf("n2 not elected within 20s of n1 stopping")
	}
	if cut != nil {
		t.Errorf("n2 cut off %s after n1 stopped (%v), though it and n3 were a quorum that elected it %s after",
			cutAt.Round(time.Millisecond), cut, elected.Round(time.Millisecond))
	}
	if err := <-applyErr; err != nil {
		t.Errorf("a write on n2 during the election failed: %v", err)
	}
}
