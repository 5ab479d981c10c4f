package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// An orphan collection pass whose call of this agent's disk hangs (the
// walk of the shard directory, a discard of a staged shard whose part a
// stage hung in a write holds, a delete of an orphan part file) gives up
// on it within ShardTimeout rather than stopping the collector, and
// Close, for as long as the disk hangs: it warns once, naming the disk,
// leaves the call among those stuck on the disk and deletes nothing
// more. Once the disk answers, a later pass collects the orphans, and
// the shards of the committed blob stay readable.
func TestOrphanCollectionGivesUpOnAHungDisk(t *testing.T) {
	orphan := strings.Repeat("cd", 16) // a blob the metadata does not know
	readsAndWrites := (*stuckDisk).options
	writes := func(d *stuckDisk) shardstore.Options {
		return shardstore.Options{WriteFault: func() error { d.wait(); return nil }}
	}
	cases := []struct {
		name string
		// disk is what hangs once disk.hang is set.
		disk func(d *stuckDisk) shardstore.Options
		// hang makes the pass's call of the disk hang.
		hang func(t *testing.T, s *Store, fc *fakeCluster, disk *stuckDisk)
		// later is what the pass after the disk answers collects: what
		// the call given up on, ended late, left.
		later int
	}{
		{"a walk of the shard directory", readsAndWrites, func(t *testing.T, s *Store, fc *fakeCluster, disk *stuckDisk) {
			putOrphan(t, s, orphan, 0)
			disk.hang.Store(true)
		}, 1},
		{"a discard of a staged shard whose part a stage hung in a write holds", writes, func(t *testing.T, s *Store, fc *fakeCluster, disk *stuckDisk) {
			stageOrphan(t, s, orphan, 0)
			disk.hang.Store(true)
			staged := make(chan error, 1)
			go func() { staged <- s.shards.Stage(orphanHeader(orphan, 1), make([]byte, 50)) }()
			ended(t, disk.entered, "the stage's write to hang on the disk")
			t.Cleanup(func() {
				disk.unhang()
				if err := ended(t, staged, "the hung stage to end once the disk answers"); err != nil {
					t.Errorf("stage of block 1 once the disk answered: %v", err)
				}
			})
		}, 1}, // block 1: block 0 went with the discard, ended late
		{"a delete of an orphan part file", readsAndWrites, func(t *testing.T, s *Store, fc *fakeCluster, disk *stuckDisk) {
			putOrphan(t, s, orphan, 0)
			fc.afterLeader = func() { // the leader has answered: the walk is done, the delete is to come
				fc.afterLeader = nil
				disk.hang.Store(true)
			}
		}, 0}, // the delete, ended late, took the orphan
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logs testlog.Buffer
			disk := newStuckDisk()
			s, fc := newTestStoreOpts(t, Config{RepairInterval: time.Hour, ShardTimeout: 100 * time.Millisecond},
				slog.New(slog.NewTextHandler(&logs, nil)), tc.disk(disk), "n1", "n1", "n2", "n3")
			t.Cleanup(disk.unhang) // before the store closes, which waits for the calls
			commitScrubbed(t, s, fc, 3)
			tc.hang(t, s, fc, disk)

			later := time.Now().Add(time.Hour) // past OrphanGrace
			done := make(chan int, 1)
			go func() { done <- s.CollectOrphans(context.Background(), later) }()
			if n := ended(t, done, "orphan collection to end while the disk hangs"); n != 0 {
				t.Fatalf("orphan collection on a hung disk deleted %d shards, want none", n)
			}
			if n := s.stuck.Load(); n != 1 {
				t.Fatalf("%d calls of orphan collection left on the hung disk, want 1: the pass stops at the first", n)
			}
			var warned []string
			for _, line := range strings.Split(logs.String(), "\n") {
				if strings.Contains(line, "level=WARN") && strings.Contains(line, s.shards.Dir()) {
					warned = append(warned, line)
				}
			}
			if len(warned) != 1 || !strings.Contains(warned[0], "orphan collection") {
				t.Fatalf("orphan collection, given up on a hung disk, warned %d times naming the disk %s, want once:\n%s", len(warned), s.shards.Dir(), logs.String())
			}
			// Later passes, and the other passes over the shards, do
			// not start while that call is stuck: a disk hung for good
			// holds one place among the stuck calls, not one a pass.
			s.CollectOrphans(context.Background(), later)
			s.ScrubOnce(context.Background(), 1<<30)
			s.CheckHeld(context.Background())
			if n := s.stuck.Load(); n != 1 {
				t.Fatalf("%d calls left on the hung disk after more passes, want still 1", n)
			}

			disk.unhang()
			testwait.For(t, 10*time.Second, "the abandoned call to end once the disk answers", func() bool { return s.stuck.Load() == 0 })
			if n := s.CollectOrphans(context.Background(), later); n != tc.later {
				t.Fatalf("a pass on a disk that answers collected %d shards, want %d", n, tc.later)
			}
			if staged := s.shards.Staged(); len(staged) != 0 {
				t.Fatalf("staged orphans after a pass on a disk that answers: %v, want none", staged)
			}
			for block := range uint32(2) {
				if _, _, err := s.shards.Get(shardstore.ID{Blob: orphan, Block: block, Index: 0}, nil); !errors.Is(err, shardstore.ErrNotFound) {
					t.Fatalf("orphan shard %d after a pass on a disk that answers: %v, want not found", block, err)
				}
			}
			for block := range uint32(3) {
				id := shardstore.ID{Blob: strings.Repeat("ab", 16), Block: block, Index: 0}
				if err := s.shards.Verify(id); err != nil {
					t.Fatalf("shard %s of the committed blob after orphan collection: %v", id, err)
				}
			}
		})
	}
}

// orphanHeader is the header of shard 0 of block of blob, 2+1, a 100-byte
// block: a shard of 50 zero bytes.
func orphanHeader(blob string, block uint32) shardstore.Header {
	return shardstore.Header{ID: shardstore.ID{Blob: blob, Block: block, Index: 0}, K: 2, M: 1, BlockLen: 100, ShardLen: 50,
		Sum: codec.Checksum(make([]byte, 50)), BlockSize: 100}
}

// putOrphan stores shard 0 of block of blob, which no blob places here.
func putOrphan(t *testing.T, s *Store, blob string, block uint32) {
	t.Helper()
	if err := s.shards.Put(orphanHeader(blob, block), make([]byte, 50)); err != nil {
		t.Fatal(err)
	}
}

// stageOrphan stages shard 0 of block of blob, of no pending put.
func stageOrphan(t *testing.T, s *Store, blob string, block uint32) {
	t.Helper()
	if err := s.shards.Stage(orphanHeader(blob, block), make([]byte, 50)); err != nil {
		t.Fatal(err)
	}
}

// An orphan collection pass over a store whose walk takes longer than
// ShardTimeout on a disk that answers, a part file at a time (a large
// store, a slow disk), is not given up on: only a walk that gets past no
// part file within ShardTimeout is. Given up on each pass, orphan
// collection would never end on a large store, and its walks, left on
// the disk, would pile up among the stuck calls until the store refused
// every call as if its disk hung.
func TestOrphanCollectionWalksAStoreSlowerThanTheShardTimeout(t *testing.T) {
	const files, perFile, timeout = 6, 500 * time.Millisecond, 2 * time.Second // the walk: 3 s
	var slow atomic.Bool
	opts := shardstore.Options{ReadFault: func(shardstore.ID) error {
		if slow.Load() {
			time.Sleep(perFile) // a disk that answers, slowly: one frame header per part file
		}
		return nil
	}}
	s, fc := newTestStoreOpts(t, Config{RepairInterval: time.Hour, ShardTimeout: timeout}, testlog.New(t, "n1"), opts, "n1", "n1", "n2", "n3")
	for i := range files {
		putOrphan(t, s, strings.Repeat(fmt.Sprintf("%02x", 0xc0+i), 16), 0)
	}
	slow.Store(true)
	fc.afterLeader = func() { slow.Store(false) } // the walk is done
	if n := s.CollectOrphans(context.Background(), time.Now().Add(time.Hour)); n != files {
		t.Fatalf("a pass whose walk took longer than the shard timeout, making progress, collected %d orphans, want %d", n, files)
	}
	if n := s.stuck.Load(); n != 0 {
		t.Fatalf("%d calls left on a disk that answers, want none", n)
	}
}
