package shardstore

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hungSync is a disk whose part-file fsyncs hang, once hang is set, until
// released: entered receives when one starts hanging.
type hungSync struct {
	hang    atomic.Bool
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newHungSync(t *testing.T) *hungSync {
	d := &hungSync{entered: make(chan struct{}, 1), release: make(chan struct{})}
	t.Cleanup(d.unhang)
	return d
}

func (d *hungSync) delay() time.Duration {
	if d.hang.Load() {
		select {
		case d.entered <- struct{}{}:
		default:
		}
		<-d.release
	}
	return 0
}

func (d *hungSync) unhang() { d.once.Do(func() { d.hang.Store(false); close(d.release) }) }

// await waits, at most 10 s, for ch to deliver, failing t saying what it
// awaited otherwise.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out after 10s waiting for %s", what)
		panic("unreachable")
	}
}

// A commit of a new part file whose fsync hangs (a disk hung in fsync)
// keeps no reader waiting: a shard of another blob whose part file is
// under the same part lock stays readable. Nor does it keep a delete of
// the committing blob waiting: the delete removes the staged part file,
// and the commit, once the disk ends its fsync, fails and commits
// nothing, so that nothing of the deleted blob is left.
func TestReadsDoNotWaitForACommitHungInFsync(t *testing.T) {
	disk := newHungSync(t)
	s := open(t, t.TempDir(), Options{SyncDelay: disk.delay})
	committing := ID{Blob: blobA, Index: 1}
	var other ID
	for i := 1; other.Blob == ""; i++ {
		id := ID{Blob: fmt.Sprintf("%032x", i), Index: 1}
		if s.partLock(id.Blob, id.Index) == s.partLock(committing.Blob, committing.Index) {
			other = id
		}
	}
	_, want := put(t, s, other, testBlockSize, 1)
	stage(t, s, committing, testBlockSize, 2)

	disk.hang.Store(true)
	committed := make(chan error, 1)
	go func() {
		_, err := s.CommitStaged(blobA)
		committed <- err
	}()
	await(t, disk.entered, "the commit's fsync to start")
	deleted := make(chan error, 1)
	go func() {
		_, err := s.DeleteBlob(blobA)
		deleted <- err
	}()
	type read struct {
		payload []byte
		err     error
	}
	reads := make(chan read, 1)
	go func() {
		_, p, err := s.Get(other, nil)
		reads <- read{p, err}
	}()
	r := await(t, reads, "a read of another blob's shard while a commit hangs in fsync")
	if r.err != nil || !bytes.Equal(r.payload, want) {
		t.Fatalf("read of %s while a commit hangs in fsync: %v; payload matches: %v", other, r.err, bytes.Equal(r.payload, want))
	}
	if err := await(t, deleted, "a delete of the committing blob while the commit hangs in fsync"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	disk.unhang()
	if err := await(t, committed, "the commit once the disk answers"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("commit of a blob deleted while it hung in fsync: %v, want ErrNotFound", err)
	}
	if _, _, err := s.Get(committing, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("read of a shard of the deleted blob: %v, want ErrNotFound", err)
	}
	if files := blobFiles(t, s, blobA); len(files) != 0 {
		t.Fatalf("files left of the deleted blob: %v", files)
	}
	wantUsage(t, s, partSize(1), 1) // the other blob's shard
	sameUsageAsOpen(t, s, "after the commit of a deleted blob")
}

// A block written into an existing part file (repair rewriting it, or a
// Put of a shard of a blob already held) whose fsync hangs keeps no
// reader waiting: the other blocks of that file, and a shard of another
// blob whose part file is under the same part lock, stay readable. The
// write ends once the disk does, and its block reads back then.
func TestReadsDoNotWaitForAMergeHungInFsync(t *testing.T) {
	disk := newHungSync(t)
	s := open(t, t.TempDir(), Options{SyncDelay: disk.delay})
	held := ID{Blob: blobA, Block: 0, Index: 1}
	merged := ID{Blob: blobA, Block: 1, Index: 1}
	var other ID
	for i := 1; other.Blob == ""; i++ {
		id := ID{Blob: fmt.Sprintf("%032x", i), Index: 1}
		if s.partLock(id.Blob, id.Index) == s.partLock(held.Blob, held.Index) {
			other = id
		}
	}
	_, wantOther := put(t, s, other, testBlockSize, 1)
	_, wantHeld := put(t, s, held, testBlockSize, 2)

	disk.hang.Store(true)
	h, wantMerged := shard(merged, testBlockSize, 3)
	written := make(chan error, 1)
	go func() { written <- s.Put(h, wantMerged) }()
	await(t, disk.entered, "the merge's fsync to start")
	type read struct {
		payload []byte
		err     error
	}
	for _, tc := range []struct {
		id   ID
		want []byte
	}{{other, wantOther}, {held, wantHeld}} {
		reads := make(chan read, 1)
		go func() {
			_, p, err := s.Get(tc.id, nil)
			reads <- read{p, err}
		}()
		r := await(t, reads, fmt.Sprintf("a read of %s while a merge into part file %s hangs in fsync", tc.id, s.Path(merged)))
		if r.err != nil || !bytes.Equal(r.payload, tc.want) {
			t.Fatalf("read of %s while a merge hangs in fsync: %v; payload matches: %v", tc.id, r.err, bytes.Equal(r.payload, tc.want))
		}
	}
	disk.unhang()
	if err := await(t, written, "the merge once the disk answers"); err != nil {
		t.Fatalf("merge: %v", err)
	}
	if _, p, err := s.Get(merged, nil); err != nil || !bytes.Equal(p, wantMerged) {
		t.Fatalf("read of the merged block %s: %v; payload matches: %v", merged, err, bytes.Equal(p, wantMerged))
	}
}

// A commit whose fsync hangs (a disk hung in fsync) keeps no other blob's
// delete or write waiting, not even those of blobs whose ids hash like
// its own: a delete of one, then a put of another, end while the fsync
// hangs: the staged part's, or a merge's into an existing part file. The
// commit ends once the disk does.
func TestOtherBlobsDeletesAndWritesDoNotWaitForACommitHungInFsync(t *testing.T) {
	for _, merge := range []bool{false, true} {
		t.Run(fmt.Sprintf("merge=%v", merge), func(t *testing.T) {
			var armed atomic.Bool
			entered, release := make(chan struct{}, 1), make(chan struct{})
			var once sync.Once
			unhang := func() { once.Do(func() { close(release) }) }
			t.Cleanup(unhang)
			s := open(t, t.TempDir(), Options{SyncDelay: func() time.Duration {
				if armed.CompareAndSwap(true, false) { // the next fsync only
					entered <- struct{}{}
					<-release
				}
				return 0
			}})
			deleted := hashesLike(blobA, 64)
			written := hashesLike(blobA, 64, deleted)
			put(t, s, ID{Blob: deleted, Index: 1}, testBlockSize, 1)
			if merge {
				put(t, s, ID{Blob: blobA, Block: 0, Index: 1}, testBlockSize, 2)
			}
			_, want := stage(t, s, ID{Blob: blobA, Block: 1, Index: 1}, testBlockSize, 3)

			armed.Store(true)
			committed := make(chan error, 1)
			go func() {
				_, err := s.CommitStaged(blobA)
				committed <- err
			}()
			await(t, entered, "the commit's fsync to start")
			deletes := make(chan error, 1)
			go func() {
				_, err := s.DeleteBlob(deleted)
				deletes <- err
			}()
			puts := make(chan error, 1)
			go func() {
				h, p := shard(ID{Blob: written, Index: 1}, testBlockSize, 4)
				puts <- s.Put(h, p)
			}()
			if err := await(t, deletes, "a delete of a blob under the committing blob's lock while the commit hangs in fsync"); err != nil {
				t.Fatalf("delete of %s: %v", deleted, err)
			}
			if err := await(t, puts, "a put of a blob under the committing blob's lock while the commit hangs in fsync"); err != nil {
				t.Fatalf("put of %s: %v", written, err)
			}
			if _, _, err := s.Get(ID{Blob: deleted, Index: 1}, nil); !errors.Is(err, ErrNotFound) {
				t.Fatalf("read of the deleted blob's shard: %v, want ErrNotFound", err)
			}
			unhang()
			if err := await(t, committed, "the commit once the disk answers"); err != nil {
				t.Fatalf("commit: %v", err)
			}
			if _, p, err := s.Get(ID{Blob: blobA, Block: 1, Index: 1}, nil); err != nil || !bytes.Equal(p, want) {
				t.Fatalf("read of the committed shard: %v; payload matches: %v", err, bytes.Equal(p, want))
			}
			sameUsageAsOpen(t, s, "after the commit")
		})
	}
}
