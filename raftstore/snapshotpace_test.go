package raftstore

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"
)

func TestSnapshotThresholdFollowsRegistrySize(t *testing.T) {
	for _, tc := range []struct {
		floor     uint64
		instances int
		want      uint64
	}{
		{8192, 0, 8192},
		{8192, 100_000, 8192},
		{8192, 131_072, 8192},
		{8192, 200_000, 16384},
		{8192, 1_000_000, 65536},
		{16, 256, 16},
		{16, 600, 64},
	} {
		if got := snapshotThreshold(tc.floor, tc.instances); got != tc.want {
			t.Errorf("snapshotThreshold(%d, %d) = %d, want %d", tc.floor, tc.instances, got, tc.want)
		}
	}
}

// PaceSnapshots raises raft's snapshot threshold as the registry grows,
// and stops when its context ends.
func TestStorePacesSnapshotsToTheRegistrySize(t *testing.T) {
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelInfo)
	cfg.SnapshotThreshold = MinSnapshotThreshold
	cfg.SnapshotInterval = 20 * time.Millisecond
	s := openStore(t, New(cfg))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.PaceSnapshots(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	for i := range 600 {
		mustStoreApply(t, s, registerCmd(testInstance("api", fmt.Sprint(i), "n1")))
	}
	eventually(t, 10*time.Second, "a snapshot threshold of 64 for 600 instances", func() bool {
		return s.raft.ReloadableConfig().SnapshotThreshold == 64
	})
}
