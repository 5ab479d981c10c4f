package raftstore

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	walfs "github.com/hashicorp/raft-wal/fs"
	waltypes "github.com/hashicorp/raft-wal/types"
)

// slowDisk stands for a disk of an agent's own whose fsync takes delay:
// segments are written to the operating system's file system, and each
// fsync is a sleep, so that agents in one process do not share this
// machine's disk (whose fsyncs serialise each other's journal commits).
func slowDisk(delay time.Duration) waltypes.VFS {
	return filesFS{walfs.New(), func(_ string, f waltypes.WritableFile) waltypes.WritableFile { return slowFile{f, delay} }}
}

type slowFile struct {
	waltypes.WritableFile
	delay time.Duration
}

func (f slowFile) Sync() error { time.Sleep(f.delay); return nil }

// BenchmarkClusterWriteSlowDisks: three stores in this process, each on
// a disk of its own whose fsync takes 1 ms (slowDisk), writes on the
// leader. sync-first: the leader fsyncs a batch before raft sends it, as
// raft-wal alone does; sync-beside: its fsync runs while the batch is
// replicated (syncahead.go). ns/op is the time per write: with one
// writer, a write's latency; with 16, the inverse of their throughput.
//
//	go test -run '^$' -bench ClusterWriteSlowDisks -benchtime 1000x ./raftstore/
func BenchmarkClusterWriteSlowDisks(b *testing.B) {
	for _, mode := range []string{"sync-first", "sync-beside"} {
		for _, writers := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/writers=%d", mode, writers), func(b *testing.B) {
				benchClusterWrites(b, mode == "sync-first", writers)
			})
		}
	}
}

func benchClusterWrites(b *testing.B, syncFirst bool, writers int) {
	stores := openCluster(b, 3, func(_ int, cfg *Config) {
		cfg.logFS = slowDisk(time.Millisecond)
		cfg.logSyncFirst = syncFirst
		// The tests' 100 ms lease steps a leader down on a loaded machine.
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = time.Second, time.Second, time.Second
	})
	leader := leaderOf(b, stores)
	mustStoreApply(b, leader, registerCmd(testInstance("bench", "warm", "n1")))
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if _, err := leader.Apply(b.Context(), registerCmd(testInstance("bench", fmt.Sprint(w, "-", i), "n1"))); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
}
