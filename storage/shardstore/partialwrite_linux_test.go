package shardstore

import (
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// TestAMergeWhoseWriteStopsMidFrameCountsTheFrameAsOpenDoes: a commit
// whose staged block goes into an existing part file fails partway
// through that block's frame, the frame's header and part of its
// payload written (a disk that fills mid-write: here the file size
// limit, which fails a write with EFBIG past it, as a full disk does
// with ENOSPC). Open counts that block, its frame header being in the
// file; the usage must count it too, or MaxBytes, the metrics and
// `zrpcctl status` go by a figure that a restart changes.
func TestAMergeWhoseWriteStopsMidFrameCountsTheFrameAsOpenDoes(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	put(t, s, ID{blobA, 0, 1}, testBlockSize, 1)
	// Staged last block first, so that the staged part is written
	// through the page cache before the limit applies.
	for b := uint32(3); b >= 1; b-- {
		h, p := shard(ID{blobA, b, 1}, testBlockSize, 1)
		if err := s.Stage(h, p); err != nil {
			t.Fatal(err)
		}
	}
	// Block 1's frame header and 100 bytes of its payload fit.
	var err error
	withFileSizeLimit(t, partSize(1)+frameHeaderSize+100, func() { _, err = s.CommitStaged(blobA) })
	if err == nil {
		t.Fatal("a merge past the file size limit succeeded")
	}
	sameUsageAsOpen(t, s, fmt.Sprintf("after a merge that stopped mid-frame (%v)", err))
}

// withFileSizeLimit runs fn with the process's file size limit lowered
// to limit bytes: a write past it fails with EFBIG, one that crosses it
// is cut there, as on a disk that fills mid-write.
func withFileSizeLimit(t *testing.T, limit int64, fn func()) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	lowered := old
	lowered.Cur = uint64(limit)
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &lowered); err != nil {
		t.Skipf("cannot lower the file size limit: %v", err)
	}
	defer func() {
		if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
			t.Fatalf("restore the file size limit: %v", err)
		}
	}()
	fn()
}

// TestAStageWhoseWriteStopsMidFrameLeavesNoFrame: a shard staged into a
// part through the page cache fails partway through its frame (a disk
// that fills mid-write). The stage fails and the shard is not staged;
// the part's other shards commit, and the part file holds nothing of the
// failed one: Open counts what the usage counts.
func TestAStageWhoseWriteStopsMidFrameLeavesNoFrame(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	// Block 1 first: not the gathered bytes' next frame, so the part is
	// written through the page cache from then on.
	stage(t, s, ID{blobA, 1, 1}, testBlockSize, 1)
	h, p := shard(ID{blobA, 2, 1}, testBlockSize, 1)
	var err error
	withFileSizeLimit(t, partSize(2)+frameHeaderSize+100, func() { err = s.Stage(h, p) })
	if err == nil {
		t.Fatal("a stage past the file size limit succeeded")
	}
	stage(t, s, ID{blobA, 0, 1}, testBlockSize, 1)
	if n, err := s.CommitStaged(blobA); n != 2 || err != nil {
		t.Fatalf("CommitStaged = %d, %v; want the 2 shards staged", n, err)
	}
	wantUsage(t, s, partSize(2), 2)
	sameUsageAsOpen(t, s, fmt.Sprintf("after a stage that stopped mid-frame (%v)", err))
	if _, err := s.Stat(h.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat of the shard whose stage failed = %v, want ErrNotFound", err)
	}
}

// TestAShardStagedAgainWhoseWriteStopsMidFrameIsNotCommitted: a shard
// staged a second time (repair staging a block rebuilt again) fails
// partway through its frame, over the first one's. Neither is whole in
// the part any more: the shard is no longer staged, and the commit does
// not make a block that fails its checksum durable as if it held it.
func TestAShardStagedAgainWhoseWriteStopsMidFrameIsNotCommitted(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	id := ID{blobA, 1, 1}
	stage(t, s, id, testBlockSize, 1)
	stage(t, s, ID{blobA, 2, 1}, testBlockSize, 1)
	h, p := shard(id, testBlockSize, 2)
	var err error
	withFileSizeLimit(t, partSize(1)+frameHeaderSize+100, func() { err = s.Stage(h, p) })
	if err == nil {
		t.Fatal("a stage past the file size limit succeeded")
	}
	if n, err := s.CommitStagedShards(blobA, []ID{id, {blobA, 2, 1}}); n != 1 || err != nil {
		t.Fatalf("CommitStagedShards = %d, %v; want 1, block 2's shard only", n, err)
	}
	if _, err := s.Stat(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat of the shard whose second stage failed = %v, want ErrNotFound", err)
	}
	sameUsageAsOpen(t, s, "after a second stage that stopped mid-frame")
}
