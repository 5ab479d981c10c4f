package shardstore

import (
	"bytes"
	"cmp"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/testlog"
)

// fullDisk answers every write with ENOSPC while full is set
// (Options.WriteFault); writes counts the steps it was asked about.
type fullDisk struct {
	full   atomic.Bool
	writes atomic.Int64
}

func (d *fullDisk) fault() error {
	d.writes.Add(1)
	if d.full.Load() {
		return syscall.ENOSPC
	}
	return nil
}

// noTempFiles fails when a temporary part file is left in the store.
func noTempFiles(t *testing.T, s *Store) {
	t.Helper()
	filepath.WalkDir(s.dir, func(path string, _ os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(path, tmpSuffix) {
			t.Errorf("temporary file %s left behind", path)
		}
		return nil
	})
}

// TestAFullDiskRefusesAPutAndKeepsWhatWasThere: with the shard disk full,
// a Put, a staged put and repair's rewrite of a block in an existing
// part file each fail with ErrNoSpace naming the shard; nothing of them
// becomes visible, no temporary file stays, the usage is what it was, and
// the blocks that were stored read back unchanged. Once there is room
// again the same writes succeed.
func TestAFullDiskRefusesAPutAndKeepsWhatWasThere(t *testing.T) {
	var disk fullDisk
	s := open(t, t.TempDir(), Options{WriteFault: disk.fault})
	stored := stageBlob(t, s, 4, 1)
	if _, err := s.CommitStaged(blobA); err != nil {
		t.Fatal(err)
	}
	if disk.writes.Load() == 0 {
		t.Fatal("WriteFault was never asked: the store would not see a full disk")
	}
	usage, shards := s.Usage()

	disk.full.Store(true)
	// A Put of a new part.
	h, p := shard(ID{blobB, 0, 0}, testBlockSize, 7)
	if err := s.Put(h, p); !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), blobB) {
		t.Fatalf("Put on a full disk: %v, want ErrNoSpace naming blob %s", err, blobB)
	}
	// A staged put: staging fails at once.
	hs, ps := shard(ID{blobB, 0, 3}, testBlockSize, 8)
	if err := s.Stage(hs, ps); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Stage on a full disk: %v, want ErrNoSpace", err)
	}
	// Repair's rewrite of block 2 of the existing part, and a new block 9.
	for _, b := range []uint32{2, 9} {
		h, p := shard(ID{blobA, b, 1}, testBlockSize, 1)
		if err := s.Put(h, p); !errors.Is(err, ErrNoSpace) {
			t.Fatalf("rewrite of block %d on a full disk: %v, want ErrNoSpace", b, err)
		}
	}
	wantUsage(t, s, usage, shards)
	noTempFiles(t, s)
	if _, _, err := s.Get(ID{blobB, 0, 0}, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of the refused shard: %v, want ErrNotFound", err)
	}
	if _, _, err := s.Get(ID{blobA, 9, 1}, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of the refused new block: %v, want ErrNotFound", err)
	}
	for id, want := range stored {
		if _, got, err := s.Get(id, nil); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Get %s after the refused writes: %v", id, err)
		}
	}
	if bad, err := s.VerifyPart(blobA, 1); err != nil || len(bad) != 0 {
		t.Fatalf("VerifyPart after the refused writes: bad blocks %v, %v", bad, err)
	}

	disk.full.Store(false)
	if err := s.Put(h, p); err != nil {
		t.Fatalf("Put once there is room: %v", err)
	}
	if err := s.Stage(hs, ps); err != nil {
		t.Fatalf("Stage once there is room: %v", err)
	}
	if n, err := s.CommitStaged(blobB); err != nil || n != 1 {
		t.Fatalf("CommitStaged once there is room = %d, %v; want 1", n, err)
	}
	for _, id := range []ID{{blobB, 0, 0}, {blobB, 0, 3}} {
		if _, _, err := s.Get(id, nil); err != nil {
			t.Fatalf("Get %s once there is room: %v", id, err)
		}
	}
}

// TestADiskThatFillsAtCommitLeavesNothingVisible: shards staged while
// there was room, then a full disk at the commit's fsync: the commit
// fails with ErrNoSpace, the blob has no part file, the space reserved by
// staging is given back, and blocks already committed stay readable.
func TestADiskThatFillsAtCommitLeavesNothingVisible(t *testing.T) {
	var disk fullDisk
	s := open(t, t.TempDir(), Options{WriteFault: disk.fault})
	h, p := put(t, s, ID{blobB, 0, 0}, testBlockSize, 3)
	before, shards := s.Usage()
	stageBlob(t, s, 3, 0, 4)
	disk.full.Store(true)
	if n, err := s.CommitStaged(blobA); !errors.Is(err, ErrNoSpace) || n != 0 {
		t.Fatalf("CommitStaged on a disk that filled = %d, %v; want 0, ErrNoSpace", n, err)
	}
	if files := blobFiles(t, s, blobA); slices.ContainsFunc(files, func(f string) bool { return !strings.HasPrefix(f, ".") }) || len(files) != 0 {
		t.Fatalf("blob A's directory holds %v after a failed commit, want nothing", files)
	}
	noTempFiles(t, s)
	wantUsage(t, s, before, shards)
	if _, got, err := s.Get(h.ID, nil); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("Get of the shard committed before: %v", err)
	}
}

// TestABlockTheDiskCannotReadIsCorrupt: a block whose read fails with
// EIO (a bad sector) is a CorruptError naming it, from Get, Stat, Verify
// and VerifyPart alike, so that the agent reports it and repair rewrites
// it; the part's other blocks read as before. Another read error (here
// too many open files) is not corruption and is returned as it is.
func TestABlockTheDiskCannotReadIsCorrupt(t *testing.T) {
	var fail atomic.Pointer[error]
	bad := ID{blobA, 2, 1}
	s := open(t, t.TempDir(), Options{ReadFault: func(id ID) error {
		if e := fail.Load(); e != nil && id == bad {
			return *e
		}
		return nil
	}})
	stored := stageBlob(t, s, 4, 1)
	if _, err := s.CommitStaged(blobA); err != nil {
		t.Fatal(err)
	}
	eio := error(syscall.EIO)
	fail.Store(&eio)
	var ce *CorruptError
	if _, _, err := s.Get(bad, nil); !errors.As(err, &ce) || ce.Block != 2 || !strings.Contains(err.Error(), "input/output error") || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Get of a block the disk cannot read: %v, want a CorruptError for block 2 wrapping the disk's EIO", err)
	}
	if _, err := s.Stat(bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Stat of it: %v, want ErrCorrupt", err)
	}
	if err := s.Verify(bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify of it: %v, want ErrCorrupt", err)
	}
	if blocks, err := s.VerifyPart(blobA, 1); err != nil || !slices.Equal(blocks, []uint32{2}) {
		t.Fatalf("VerifyPart = %v, %v; want block 2 only", blocks, err)
	}
	for id, want := range stored {
		if id == bad {
			continue
		}
		if _, got, err := s.Get(id, nil); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Get %s beside the unreadable block: %v", id, err)
		}
	}
	emfile := error(syscall.EMFILE)
	fail.Store(&emfile)
	if _, _, err := s.Get(bad, nil); err == nil || errors.Is(err, ErrCorrupt) || !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("Get failing with too many open files: %v, want that error, not ErrCorrupt", err)
	}
	fail.Store(nil)
	if _, got, err := s.Get(bad, nil); err != nil || !bytes.Equal(got, stored[bad]) {
		t.Fatalf("Get once the disk reads it again: %v", err)
	}
}

// TestAFrameHeaderTheDiskCannotReadFailsNeitherOpenNorAWalk: a part file
// with a frame header on a bad sector (EIO) does not stop the agent
// starting or a walk over its shards: Open succeeds and logs the file and
// the block, the block counts as held and reads as corrupt (so that the
// scrubber reports it and repair rewrites it), and the file's other
// blocks and the other files read and are walked as before. Another read
// error of a frame header leaves only that file out of the count and of
// the walk.
func TestAFrameHeaderTheDiskCannotReadFailsNeitherOpenNorAWalk(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	stored := stageBlob(t, s, 4, 0, 1)
	if _, err := s.CommitStaged(blobA); err != nil {
		t.Fatal(err)
	}
	after := ID{blobB, 2, 0} // a file the walk comes to after the damaged one
	_, stored[after] = put(t, s, after, testBlockSize, 1)
	bytesUsed, _ := s.Usage()
	all := slices.SortedFunc(maps.Keys(stored), compareWalkOrder)

	bad := ID{blobA, 1, 0}
	var fault atomic.Pointer[error]
	faultOn := func(err error) { fault.Store(&err) }
	opts := func(logs *testlog.Buffer) Options {
		return Options{Logger: slog.New(slog.NewTextHandler(logs, nil)), ReadFault: func(id ID) error {
			if err := fault.Load(); err != nil && id == bad {
				return *err
			}
			return nil
		}}
	}
	walked := func(s *Store) []ID {
		t.Helper()
		var got []ID
		if err := s.Walk(func(id ID, _ int64, _ time.Time) error { got = append(got, id); return nil }); err != nil {
			t.Fatalf("Walk: %v", err)
		}
		return got
	}

	faultOn(syscall.EIO)
	var logs, nomemLogs testlog.Buffer
	s2, err := Open(dir, opts(&logs))
	if err != nil {
		t.Fatalf("Open with block 1's frame header unreadable: %v", err)
	}
	wantUsage(t, s2, bytesUsed, len(stored))
	if l := logs.String(); !strings.Contains(l, s2.Path(bad)) || !strings.Contains(l, "blocks=[1]") || !strings.Contains(l, "input/output error") {
		t.Errorf("Open logged %q; want the part file, block 1 and the disk's error named", l)
	}
	var ce *CorruptError
	if _, _, err := s2.Get(bad, nil); !errors.As(err, &ce) || ce.Block != 1 || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Get of the block: %v, want a CorruptError for block 1 wrapping EIO", err)
	}
	if blocks, err := s2.VerifyPart(blobA, 0); err != nil || !slices.Equal(blocks, []uint32{1}) {
		t.Fatalf("VerifyPart = %v, %v; want block 1 only", blocks, err)
	}
	for id, want := range stored {
		if id == bad {
			continue
		}
		if _, got, err := s2.Get(id, nil); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Get %s beside the unreadable frame: %v", id, err)
		}
	}
	if got := walked(s2); !slices.Equal(got, all) {
		t.Fatalf("Walk = %v\nwant every shard, the unreadable one too: %v", got, all)
	}

	// Not the disk's fault: the file is left out, the walk goes on.
	faultOn(syscall.ENOMEM)
	s3, err := Open(dir, opts(&nomemLogs))
	if err != nil {
		t.Fatalf("Open failing to read a frame header for want of memory: %v", err)
	}
	wantUsage(t, s3, bytesUsed, len(stored)-4)
	if l := nomemLogs.String(); !strings.Contains(l, s3.Path(bad)) || !strings.Contains(l, "cannot allocate memory") {
		t.Errorf("Open logged %q; want the part file and the error named", l)
	}
	want := slices.DeleteFunc(slices.Clone(all), func(id ID) bool { return id.Blob == blobA && id.Index == 0 })
	if got := walked(s3); !slices.Equal(got, want) {
		t.Fatalf("Walk = %v\nwant the other files' shards: %v", got, want)
	}
}

// compareWalkOrder orders shard ids as Walk lists them: by blob, then
// index, then block.
func compareWalkOrder(a, b ID) int {
	return cmp.Or(strings.Compare(a.Blob, b.Blob), cmp.Compare(a.Index, b.Index), cmp.Compare(a.Block, b.Block))
}

// TestABlobDirectoryWhoseEntryCannotBeMadeDurableIsNotKept: the first
// shard of a blob creates its directory and fsyncs the directories above
// to make its entry durable. When that fsync fails, the shard is refused
// and the directory goes again, so that the next shard creates it and
// fsyncs anew instead of being committed into a directory whose entry a
// crash may lose.
func TestABlobDirectoryWhoseEntryCannotBeMadeDurableIsNotKept(t *testing.T) {
	var failNext atomic.Bool
	s := open(t, t.TempDir(), Options{WriteFault: func() error {
		if failNext.Swap(false) {
			return syscall.EIO
		}
		return nil
	}})
	id := ID{blobB, 0, 0}
	h, p := shard(id, testBlockSize, 1)
	failNext.Store(true) // the fsync of the blob directory's parent
	if err := s.Stage(h, p); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Stage whose directory fsync fails: %v, want EIO", err)
	}
	if _, err := os.Stat(s.blobDir(blobB)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("blob directory after its entry could not be made durable: %v, want it removed", err)
	}
	if err := s.Stage(h, p); err != nil {
		t.Fatalf("Stage once the disk syncs again: %v", err)
	}
	if n, err := s.CommitStaged(blobB); err != nil || n != 1 {
		t.Fatalf("CommitStaged = %d, %v; want 1", n, err)
	}
	if _, got, err := s.Get(id, nil); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("Get after the commit: %v", err)
	}
}

// TestARefusedFirstShardLeavesNoStagedPart: a staged put's first shard of
// an index that does not fit (under MaxBytes, with room for the part's
// header but not the shard) leaves no staged part behind: no temporary
// file, no usage, nothing that only a deletion of the blob would remove.
// Once there is room, the index's shard is staged and committed anew.
func TestARefusedFirstShardLeavesNoStagedPart(t *testing.T) {
	s := open(t, t.TempDir(), Options{MaxBytes: partSize(1) + PartHeaderSize + 10})
	put(t, s, ID{blobB, 0, 0}, testBlockSize, 1)
	id := ID{blobA, 0, 1}
	h, p := shard(id, testBlockSize, 1)
	if err := s.Stage(h, p); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Stage past MaxBytes: %v, want ErrNoSpace", err)
	}
	noTempFiles(t, s)
	wantUsage(t, s, partSize(1), 1)

	if _, err := s.DeleteBlob(blobB); err != nil {
		t.Fatal(err)
	}
	if err := s.Stage(h, p); err != nil {
		t.Fatalf("Stage once there is room: %v", err)
	}
	if n, err := s.CommitStaged(blobA); err != nil || n != 1 {
		t.Fatalf("CommitStaged = %d, %v; want 1", n, err)
	}
	if _, got, err := s.Get(id, nil); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("Get after the commit: %v", err)
	}
}
