package raftstore

import (
	"log/slog"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// A store that is its cluster's only voter leads as soon as it opens, both
// when it bootstraps and when it restarts with state: with a heartbeat
// timeout of a minute, waiting for it would outlast openStore's deadline.
func TestStoreSoleVoterStandsWithoutWaitingForHeartbeatTimeout(t *testing.T) {
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelInfo)
	cfg.HeartbeatTimeout = time.Minute
	cfg.ElectionTimeout = time.Minute
	cfg.LeaderLeaseTimeout = time.Minute
	s := openStore(t, New(cfg))
	rev := mustStoreApply(t, s, registerCmd(testInstance("api", "1", "n1")))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s2 := openStore(t, New(cfg))
	eventually(t, 10*time.Second, "consistent read after restart", func() bool {
		return s2.CheckRead(pb.Consistency_CONSISTENT) == nil
	})
	if got := s2.FSM().Instance("api", "1"); got.GetModRevision() != rev {
		t.Fatalf("instance after restart: %v, want mod revision %d", got, rev)
	}
}
