package shardstore

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// refuseDirect makes the store write staged parts through the page cache
// for the rest of t, as on a file system without O_DIRECT.
func refuseDirect(t *testing.T) {
	t.Helper()
	orig := openDirect
	openDirect = func(string) (*os.File, error) { return nil, errors.New("no O_DIRECT here") }
	t.Cleanup(func() { openDirect = orig })
}

// directBlockSize is the block size of the blobs of the direct-write
// tests: 4+2 shards of 256 KiB, so that a few blocks fill a chunk.
const directBlockSize = 1 << 20

// stageBlocks stages blocks of blobA's index 0 in the order given (seed
// tells restaged blocks apart) and returns their payloads by block.
func stageBlocks(t *testing.T, s *Store, blocks []uint32) map[uint32][]byte {
	t.Helper()
	out := make(map[uint32][]byte)
	for i, b := range blocks {
		h, p := shardOf(ID{blobA, b, 0}, 4, 2, directBlockSize, directBlockSize, uint64(i)+1)
		if err := s.Stage(h, p); err != nil {
			t.Fatalf("Stage block %d: %v", b, err)
		}
		out[b] = p
	}
	return out
}

// checkCommitted commits blobA and reads every block back.
func checkCommitted(t *testing.T, s *Store, want map[uint32][]byte) {
	t.Helper()
	if n, err := s.CommitStaged(blobA); err != nil || n != len(want) {
		t.Fatalf("commit: %d shards, %v; want %d", n, err, len(want))
	}
	for b, p := range want {
		if _, got, err := s.Get(ID{blobA, b, 0}, nil); err != nil || !bytes.Equal(got, p) {
			t.Fatalf("block %d after commit: %v (bytes equal: %v)", b, err, bytes.Equal(got, p))
		}
	}
}

// A part staged in block order, as a put writes it, goes to the disk in
// whole chunks written with O_DIRECT (on Linux, whose test file systems
// take it), and reads back whole once committed, its unaligned tail
// written at the commit.
func TestStagedPartInBlockOrderIsWrittenDirect(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("O_DIRECT is Linux's")
	}
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if f, err := openDirect(probe); err != nil {
		t.Skipf("the test directory's file system refuses O_DIRECT: %v", err)
	} else {
		f.Close()
	}
	os.Remove(probe)
	s := open(t, dir, Options{})
	before := directWrites.Load()
	var blocks []uint32
	for b := range uint32(12) {
		blocks = append(blocks, b)
	}
	want := stageBlocks(t, s, blocks)
	if directWrites.Load() == before {
		t.Fatal("staging 12 blocks in order wrote no chunk with O_DIRECT")
	}
	checkCommitted(t, s, want)
}

// Frames that do not follow the last one (a retried block, blocks out of
// order), a discarded block, and a part on a file system that refuses
// O_DIRECT all end with the same bytes committed.
func TestStagedPartOffTheDirectPathKeepsItsBytes(t *testing.T) {
	for _, c := range []struct {
		name   string
		blocks []uint32
		refuse bool
	}{
		{"out of order", []uint32{0, 1, 2, 5, 3, 4, 6, 7, 8}, false},
		{"restaged block", []uint32{0, 1, 2, 3, 2, 4, 5, 6, 7}, false},
		{"no O_DIRECT", []uint32{0, 1, 2, 3, 4, 5, 6, 7, 8}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.refuse {
				refuseDirect(t)
			}
			s := open(t, t.TempDir(), Options{})
			checkCommitted(t, s, stageBlocks(t, s, c.blocks))
		})
	}
	t.Run("discarded block", func(t *testing.T) {
		s := open(t, t.TempDir(), Options{})
		want := stageBlocks(t, s, []uint32{0, 1, 2, 3, 4, 5})
		s.Discard(ID{blobA, 1, 0})
		delete(want, 1)
		checkCommitted(t, s, want)
		if _, _, err := s.Get(ID{blobA, 1, 0}, nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("discarded block after commit: %v, want not found", err)
		}
	})
}

// A direct write that fails (a file system that takes O_DIRECT at open
// but not this write) leaves the chunk and the rest of the part to the
// page cache: nothing staged is lost.
func TestStagedPartWhoseDirectWriteFailsGoesBuffered(t *testing.T) {
	orig := openDirect
	openDirect = func(path string) (*os.File, error) {
		// A read-only descriptor: every write to it fails.
		return os.Open(path)
	}
	t.Cleanup(func() { openDirect = orig })
	s := open(t, t.TempDir(), Options{})
	before := directWrites.Load()
	want := stageBlocks(t, s, []uint32{0, 1, 2, 3, 4, 5, 6, 7})
	if directWrites.Load() != before {
		t.Fatal("a chunk counted as written directly through a descriptor that takes no write")
	}
	checkCommitted(t, s, want)
}

// TestAPartWhoseGatheredBytesCannotBeWrittenIsLost: shards staged in block
// order wait in the part's buffer for a direct write; when writing them
// out fails (the disk filled meanwhile), those shards, answered as staged,
// are not in the file. The part's later shards and its commit then fail
// with ErrNoSpace, also once there is room again, rather than commit the
// lost shards as holes; nothing of the part stays, on disk or in the
// usage.
func TestAPartWhoseGatheredBytesCannotBeWrittenIsLost(t *testing.T) {
	for _, c := range []struct {
		name string
		room int64 // writes the disk takes before it is full
		// settle makes the part write out its gathered bytes.
		settle func(t *testing.T, s *Store)
	}{
		{"a shard out of order", 1, func(t *testing.T, s *Store) {
			h, p := shardOf(ID{blobA, 5, 0}, 4, 2, directBlockSize, directBlockSize, 9)
			if err := s.Stage(h, p); !errors.Is(err, ErrNoSpace) {
				t.Fatalf("Stage of block 5 on a disk that filled: %v, want ErrNoSpace", err)
			}
		}},
		{"a discarded shard", 0, func(t *testing.T, s *Store) { s.Discard(ID{blobA, 1, 0}) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			var room atomic.Int64
			room.Store(math.MaxInt64)
			s := open(t, t.TempDir(), Options{WriteFault: func() error {
				if room.Add(-1) < 0 {
					return syscall.ENOSPC
				}
				return nil
			}})
			// Three 256 KiB shards and the header: less than a chunk,
			// all of it waits in the buffer.
			stageBlocks(t, s, []uint32{0, 1, 2})
			room.Store(c.room)
			c.settle(t, s)
			room.Store(math.MaxInt64)

			h, p := shardOf(ID{blobA, 4, 0}, 4, 2, directBlockSize, directBlockSize, 9)
			if err := s.Stage(h, p); !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "lost") {
				t.Fatalf("Stage into the part after its shards were lost: %v, want ErrNoSpace saying they are lost", err)
			}
			if n, err := s.CommitStaged(blobA); !errors.Is(err, ErrNoSpace) || n != 0 {
				t.Fatalf("CommitStaged of the part whose shards were lost = %d, %v; want 0, ErrNoSpace", n, err)
			}
			for _, b := range []uint32{0, 2} {
				if _, _, err := s.Get(ID{blobA, b, 0}, nil); !errors.Is(err, ErrNotFound) {
					t.Fatalf("Get of block %d after the failed commit: %v, want ErrNotFound", b, err)
				}
			}
			noTempFiles(t, s)
			wantUsage(t, s, 0, 0)
		})
	}
}
