package raftstore

import (
	"log/slog"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// A store that is its cluster's only voter leads as soon as it is told it
// may stand, both when it bootstraps and when it restarts with state: with
// a heartbeat timeout of a minute, waiting for it would outlast
// openStore's deadline.
func TestStoreSoleVoterStandsWithoutWaitingForHeartbeatTimeout(t *testing.T) {
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelInfo)
	cfg.HeartbeatTimeout = time.Minute
	cfg.ElectionTimeout = time.Minute
	cfg.LeaderLeaseTimeout = time.Minute
	s := openSoleVoter(t, New(cfg))
	rev := mustStoreApply(t, s, registerCmd(testInstance("api", "1", "n1")))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s2 := openSoleVoter(t, New(cfg))
	eventually(t, 10*time.Second, "consistent read after restart", func() bool {
		return s2.CheckRead(pb.Consistency_CONSISTENT) == nil
	})
	if got := s2.FSM().Instance("api", "1"); got.GetModRevision() != rev {
		t.Fatalf("instance after restart: %v, want mod revision %d", got, rev)
	}
}

// openSoleVoter opens s (closed at cleanup), lets it stand and waits
// until it leads.
func openSoleVoter(t *testing.T, s *Store) *Store {
	t.Helper()
	if err := s.Open(); err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err := s.StandIfSoleVoter(); err != nil {
		t.Fatalf("StandIfSoleVoter: %v", err)
	}
	eventually(t, 10*time.Second, "leadership", s.IsLeader)
	return s
}
