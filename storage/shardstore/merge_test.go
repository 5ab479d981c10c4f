package shardstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
)

// sameUsageAsOpen fails when s's usage differs from what Open counts of
// its directory afresh: the usage an agent would have after a restart.
func sameUsageAsOpen(t testing.TB, s *Store, what string) {
	t.Helper()
	fresh := open(t, s.dir, Options{})
	wantBytes, wantShards := fresh.Usage()
	if b, n := s.Usage(); b != wantBytes || n != wantShards {
		t.Fatalf("%s: Usage = %d bytes, %d shards; Open counts %d bytes, %d shards", what, b, n, wantBytes, wantShards)
	}
}

// TestAMergeThatFailsMidwayKeepsTheUsageOfWhatItWrote: a commit whose
// staged blocks go into an existing part file fails at each of its write
// steps in turn (a disk that fills up). Whatever step fails, the blocks
// written before it are in the file, and the usage counts them as Open
// would after a restart: MaxBytes and the metrics go by it.
func TestAMergeThatFailsMidwayKeepsTheUsageOfWhatItWrote(t *testing.T) {
	for failAt := int64(1); failAt < 20; failAt++ {
		var armed atomic.Bool
		var steps atomic.Int64
		s := open(t, t.TempDir(), Options{WriteFault: func() error {
			if armed.Load() && steps.Add(1) >= failAt {
				return syscall.ENOSPC
			}
			return nil
		}})
		put(t, s, ID{blobA, 0, 1}, testBlockSize, 1)
		for b := uint32(1); b <= 3; b++ {
			h, p := shard(ID{blobA, b, 1}, testBlockSize, 1)
			if err := s.Stage(h, p); err != nil {
				t.Fatal(err)
			}
		}
		armed.Store(true)
		_, err := s.CommitStaged(blobA)
		sameUsageAsOpen(t, s, fmt.Sprintf("after a merge failing at step %d", failAt))
		if err == nil {
			if failAt < 4 {
				t.Fatalf("the merge of 3 blocks succeeded failing at step %d: the test's steps are not the merge's", failAt)
			}
			return
		}
		if !errors.Is(err, ErrNoSpace) {
			t.Fatalf("merge failing at step %d: %v, want ErrNoSpace", failAt, err)
		}
	}
	t.Fatal("the merge of 3 blocks never succeeded")
}

// TestARewriteOfAShortLastBlockCutsOffTrailingBytes: bytes past a part
// file's short last block (the blob's last) make that block read as
// corrupt. Repair's rewrite of the block in place cuts them off, so
// that the block reads back; otherwise it stayed corrupt, and was found
// and rewritten again every scrub pass. A frame the trailing bytes seemed
// to hold goes from the usage with them.
func TestARewriteOfAShortLastBlockCutsOffTrailingBytes(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	full := ID{blobA, 0, 3}
	short := ID{blobA, 1, 3}
	_, fullPayload := put(t, s, full, testBlockSize, 1)
	put(t, s, short, 1001, 1)
	path := s.Path(short)
	good, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	rewrite(t, path, func(b []byte) []byte { return append(b, bytes.Repeat([]byte{0xab}, slot+10)...) })

	s = open(t, dir, Options{}) // counts the trailing bytes, and a frame of slot 2
	if err := s.Verify(short); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify of a short block followed by stray bytes = %v, want ErrCorrupt", err)
	}
	h, p := shard(short, 1001, 1)
	if err := s.Put(h, p); err != nil {
		t.Fatalf("rewrite of the short block: %v", err)
	}
	if err := s.Verify(short); err != nil {
		t.Fatalf("Verify of the rewritten short block = %v, want it sound", err)
	}
	if _, got, err := s.Get(full, nil); err != nil || !bytes.Equal(got, fullPayload) {
		t.Fatalf("Get of block 0 after the rewrite of block 1: %v", err)
	}
	if after, err := os.Stat(path); err != nil || after.Size() != good.Size() {
		t.Fatalf("part file after the rewrite: %v, %v; want %d bytes, the file as it was written", after, err, good.Size())
	}
	wantUsage(t, s, good.Size(), 2)
	sameUsageAsOpen(t, s, "after the rewrite")
}

// TestAPartFileWhoseHeaderWentBadGivesBackItsShards: a part file whose
// header goes bad after the store counted its blocks can no longer list
// them; removed or replaced, it still gives back the shards it was
// counted with, not only its bytes, so that the usage stays what Open
// would count.
func TestAPartFileWhoseHeaderWentBadGivesBackItsShards(t *testing.T) {
	ways := map[string]func(t *testing.T, s *Store, st Stamp){
		"orphan collection removes it": func(t *testing.T, s *Store, st Stamp) {
			if _, err := s.DeleteIfSame(blobA, 2, nil, st); err != nil {
				t.Fatal(err)
			}
			wantUsage(t, s, 0, 0)
		},
		"its blob is deleted": func(t *testing.T, s *Store, _ Stamp) {
			if _, err := s.DeleteBlob(blobA); err != nil {
				t.Fatal(err)
			}
			wantUsage(t, s, 0, 0)
		},
		"a rewritten block replaces it": func(t *testing.T, s *Store, _ Stamp) {
			put(t, s, ID{blobA, 1, 2}, testBlockSize, 1)
			wantUsage(t, s, partSize(2), 1)
		},
	}
	for name, remove := range ways {
		t.Run(name, func(t *testing.T) {
			s := open(t, t.TempDir(), Options{})
			stageBlob(t, s, 4, 2)
			if _, err := s.CommitStaged(blobA); err != nil {
				t.Fatal(err)
			}
			path := s.Path(ID{Blob: blobA, Index: 2})
			flip(t, path, 30) // a byte of the blob id: the header's checksum fails
			var stamp Stamp
			if err := s.WalkBadParts(func(_ string, _ uint16, st Stamp) error { stamp = st; return nil }); err != nil {
				t.Fatal(err)
			}
			remove(t, s, stamp)
			sameUsageAsOpen(t, s, name)
		})
	}
}
