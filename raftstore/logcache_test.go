package raftstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// readCountingLog counts the entries raft reads from the log store below
// the store's cache.
type readCountingLog struct {
	raft.LogStore
	reads *atomic.Int64
}

func (l readCountingLog) GetLog(index uint64, log *raft.Log) error {
	l.reads.Add(1)
	return l.LogStore.GetLog(index, log)
}

// TestReplicationReadsRecentEntriesFromMemory: the leader sends, and the
// followers apply, recent entries without reading them back from the
// Raft log on disk.
func TestReplicationReadsRecentEntriesFromMemory(t *testing.T) {
	reads := make([]atomic.Int64, 3)
	stores := openCluster(t, 3, func(i int, cfg *Config) {
		cfg.WrapLogStore = func(l raft.LogStore) raft.LogStore { return readCountingLog{l, &reads[i]} }
	})
	leader := leaderOf(t, stores)
	for i := range reads {
		reads[i].Store(0)
	}
	var rev uint64
	for i := range 50 {
		rev = mustStoreApply(t, leader, registerCmd(testInstance("api", fmt.Sprint(i), "n1")))
	}
	for _, s := range stores {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err := s.FSM().WaitRevision(ctx, rev)
		cancel()
		if err != nil {
			t.Fatalf("%s has applied revision %d, not %d", s.cfg.NodeID, s.FSM().Revision(), rev)
		}
	}
	for i, s := range stores {
		if n := reads[i].Load(); n != 0 {
			t.Errorf("%s read %d entries back from the log store to replicate or apply 50 writes, want 0", s.cfg.NodeID, n)
		}
	}
}
