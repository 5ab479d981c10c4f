package shardstore

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/testwait"
)

// hangNext is a disk hook that, once armed, hangs its next call until
// released: entered receives when that call starts hanging. Later calls
// pass.
type hangNext struct {
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newHangNext(t *testing.T) *hangNext {
	d := &hangNext{entered: make(chan struct{}, 1), release: make(chan struct{})}
	t.Cleanup(d.unhang)
	return d
}

func (d *hangNext) hang() {
	if d.armed.CompareAndSwap(true, false) {
		d.entered <- struct{}{}
		<-d.release
	}
}

func (d *hangNext) unhang() { d.once.Do(func() { close(d.release) }) }

// hashesLike returns a blob id, other than blob and those of not, whose
// FNV-1a hash (fnv1a, index 0) is blob's modulo n: blobs that a lock
// striped n ways would put under one lock.
func hashesLike(blob string, n uint32, not ...string) string {
	for i := 1; ; i++ {
		other := fmt.Sprintf("%032x", i)
		if other != blob && !slices.Contains(not, other) && fnv1a(other, 0)%n == fnv1a(blob, 0)%n {
			return other
		}
	}
}

// samePartLock returns a shard id of index 1 of a blob other than blob
// whose part file is under the same part lock as that of (blob, index 1).
func samePartLock(s *Store, blob string) ID {
	for i := 1; ; i++ {
		id := ID{Blob: fmt.Sprintf("%032x", i), Index: 1}
		if id.Blob != blob && s.partLock(id.Blob, id.Index) == s.partLock(blob, 1) {
			return id
		}
	}
}

// A stage whose write hangs (a disk hung in a write, or in the fsync of
// the directory a new blob's part goes into) keeps no other blob's
// delete or write waiting, not even those of blobs whose ids hash like
// its own: a delete of one, then a put of another, end while it hangs.
// Once the disk answers the stage ends, and its shards commit and read
// back.
func TestOtherBlobsDeletesAndWritesDoNotWaitForAStageHungOnTheDisk(t *testing.T) {
	for _, staged := range []bool{false, true} {
		t.Run(fmt.Sprintf("staged=%v", staged), func(t *testing.T) {
			disk := newHangNext(t)
			s := open(t, t.TempDir(), Options{WriteFault: func() error { disk.hang(); return nil }})
			deleted := hashesLike(blobA, 64)
			written := hashesLike(blobA, 64, deleted)
			put(t, s, ID{Blob: deleted, Index: 1}, testBlockSize, 1)
			want := make(map[ID][]byte)
			if staged { // the hang is in the write of a frame into the staged part
				_, want[ID{Blob: blobA, Block: 0, Index: 1}] = stage(t, s, ID{Blob: blobA, Block: 0, Index: 1}, testBlockSize, 2)
			} // else in the fsync of the new blob's directory

			hung := ID{Blob: blobA, Block: 1, Index: 1}
			h, p := shard(hung, testBlockSize, 3)
			want[hung] = p
			disk.armed.Store(true)
			stages := make(chan error, 1)
			go func() { stages <- s.Stage(h, p) }()
			await(t, disk.entered, "the stage's disk call to start")
			deletes := make(chan error, 1)
			go func() {
				_, err := s.DeleteBlob(deleted)
				deletes <- err
			}()
			wh, wp := shard(ID{Blob: written, Index: 1}, testBlockSize, 4)
			puts := make(chan error, 1)
			go func() { puts <- s.Put(wh, wp) }()
			if err := await(t, deletes, "a delete of another blob while a stage hangs on the disk"); err != nil {
				t.Fatalf("delete of %s: %v", deleted, err)
			}
			if err := await(t, puts, "a put of another blob while a stage hangs on the disk"); err != nil {
				t.Fatalf("put of %s: %v", written, err)
			}
			if _, _, err := s.Get(ID{Blob: deleted, Index: 1}, nil); !errors.Is(err, ErrNotFound) {
				t.Fatalf("read of the deleted blob's shard: %v, want ErrNotFound", err)
			}

			disk.unhang()
			if err := await(t, stages, "the stage once the disk answers"); err != nil {
				t.Fatalf("stage of %s: %v", hung, err)
			}
			if n, err := s.CommitStaged(blobA); err != nil || n != len(want) {
				t.Fatalf("CommitStaged = %d, %v; want %d", n, err, len(want))
			}
			want[wh.ID] = wp
			for id, p := range want {
				if _, got, err := s.Get(id, nil); err != nil || !bytes.Equal(got, p) {
					t.Fatalf("read of %s: %v; payload matches: %v", id, err, bytes.Equal(got, p))
				}
			}
			sameUsageAsOpen(t, s, "after the stage")
		})
	}
}

// A verify whose read hangs (the scrubber on a disk hung in a read)
// keeps no write waiting: a put into a part file under the same part
// lock, and a read of it, end while the read hangs. Once the disk
// answers the verify ends, and finds the shard sound.
func TestWritesDoNotWaitForAVerifyHungInARead(t *testing.T) {
	verifies := map[string]func(s *Store, id ID) error{
		"Verify": func(s *Store, id ID) error { return s.Verify(id) },
		"VerifyPart": func(s *Store, id ID) error {
			bad, err := s.VerifyPart(id.Blob, id.Index)
			if err == nil && len(bad) > 0 {
				err = fmt.Errorf("bad blocks %v", bad)
			}
			return err
		},
	}
	for name, verify := range verifies {
		t.Run(name, func(t *testing.T) {
			disk := newHangNext(t)
			scrubbed := ID{Blob: blobA, Block: 0, Index: 1}
			s := open(t, t.TempDir(), Options{ReadFault: func(id ID) error {
				if id == scrubbed {
					disk.hang()
				}
				return nil
			}})
			put(t, s, scrubbed, testBlockSize, 1)
			other := samePartLock(s, blobA)
			_, wantHeld := put(t, s, other, testBlockSize, 2)

			disk.armed.Store(true)
			verified := make(chan error, 1)
			go func() { verified <- verify(s, scrubbed) }()
			await(t, disk.entered, "the verify's read to start")
			merged := ID{Blob: other.Blob, Block: 1, Index: 1}
			h, wantMerged := shard(merged, testBlockSize, 3)
			puts := make(chan error, 1)
			go func() { puts <- s.Put(h, wantMerged) }()
			if err := await(t, puts, fmt.Sprintf("a put into part file %s while a verify of %s hangs in a read", s.Path(merged), scrubbed)); err != nil {
				t.Fatalf("put of %s: %v", merged, err)
			}
			for id, want := range map[ID][]byte{other: wantHeld, merged: wantMerged} {
				if _, got, err := s.Get(id, nil); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("read of %s: %v; payload matches: %v", id, err, bytes.Equal(got, want))
				}
			}

			disk.unhang()
			if err := await(t, verified, "the verify once the disk answers"); err != nil {
				t.Fatalf("verify of %s: %v", scrubbed, err)
			}
		})
	}
}

// A commit that replaces a part file whose header went bad (repair
// rebuilding it) fsyncs the new part outside the part lock: with that
// fsync hung, a put into another part file under the same part lock
// ends. Once the disk answers the commit ends and its shard reads back.
func TestACommitReplacingABadPartFileKeepsNoWriteWaitingThroughItsFsync(t *testing.T) {
	var armed atomic.Bool
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var once sync.Once
	unhang := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unhang)
	s := open(t, t.TempDir(), Options{SyncDelay: func() time.Duration {
		if armed.CompareAndSwap(true, false) {
			entered <- struct{}{}
			<-release
		}
		return 0
	}})
	rebuilt := ID{Blob: blobA, Block: 0, Index: 1}
	put(t, s, rebuilt, testBlockSize, 1)
	flip(t, s.Path(rebuilt), 0) // the part header's magic
	other := samePartLock(s, blobA)
	put(t, s, other, testBlockSize, 2)
	_, want := stage(t, s, rebuilt, testBlockSize, 1)

	armed.Store(true)
	committed := make(chan error, 1)
	go func() {
		_, err := s.CommitStaged(blobA)
		committed <- err
	}()
	await(t, entered, "the commit's fsync to start")
	merged := ID{Blob: other.Blob, Block: 1, Index: 1}
	h, wantMerged := shard(merged, testBlockSize, 3)
	puts := make(chan error, 1)
	go func() { puts <- s.Put(h, wantMerged) }()
	if err := await(t, puts, fmt.Sprintf("a put into part file %s while a commit replacing %s hangs in fsync", s.Path(merged), s.Path(rebuilt))); err != nil {
		t.Fatalf("put of %s: %v", merged, err)
	}

	unhang()
	if err := await(t, committed, "the commit once the disk answers"); err != nil {
		t.Fatalf("commit: %v", err)
	}
	for id, p := range map[ID][]byte{rebuilt: want, merged: wantMerged} {
		if _, got, err := s.Get(id, nil); err != nil || !bytes.Equal(got, p) {
			t.Fatalf("read of %s: %v; payload matches: %v", id, err, bytes.Equal(got, p))
		}
	}
	sameUsageAsOpen(t, s, "after the commit")
}

// awaitBlockedOnAMutex waits, at most 10 s, until a goroutine of the
// store is blocked locking a sync.Mutex, failing t otherwise.
func awaitBlockedOnAMutex(t *testing.T, what string) {
	t.Helper()
	blocked := func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "[sync.Mutex.Lock") && strings.Contains(g, "zrpc/storage/shardstore.") {
				return true
			}
		}
		return false
	}
	testwait.For(t, 10*time.Second, what, blocked)
}

// A stage hung in a write into its blob's staged part keeps no other
// blob's stage waiting while a commit of the blob's shards staged before
// (a put's sync naming those that arrived) waits for it. Once the disk
// answers the stage and the commit end, and both shards commit and read
// back.
func TestOtherBlobsStagesDoNotWaitForACommitWaitingOnAHungStage(t *testing.T) {
	commits := map[string]func(s *Store, id ID) (int, error){
		"CommitStaged":       func(s *Store, id ID) (int, error) { return s.CommitStaged(id.Blob) },
		"CommitStagedShards": func(s *Store, id ID) (int, error) { return s.CommitStagedShards(id.Blob, []ID{id}) },
		"CommitStagedPart":   func(s *Store, id ID) (int, error) { return s.CommitStagedPart(id.Blob, id.Index) },
	}
	for name, commit := range commits {
		t.Run(name, func(t *testing.T) {
			disk := newHangNext(t)
			s := open(t, t.TempDir(), Options{WriteFault: func() error { disk.hang(); return nil }})
			first := ID{Blob: blobA, Block: 0, Index: 1}
			_, wantFirst := stage(t, s, first, testBlockSize, 1)
			hung := ID{Blob: blobA, Block: 1, Index: 1}
			h, wantHung := shard(hung, testBlockSize, 2)
			disk.armed.Store(true)
			stages := make(chan error, 1)
			go func() { stages <- s.Stage(h, wantHung) }()
			await(t, disk.entered, "the stage's write to start")
			type result struct {
				n   int
				err error
			}
			committed := make(chan result, 1)
			go func() {
				n, err := commit(s, first)
				committed <- result{n, err}
			}()
			awaitBlockedOnAMutex(t, "the commit to wait for the hung stage")

			other := ID{Blob: blobB, Index: 1}
			oh, op := shard(other, testBlockSize, 3)
			otherStages := make(chan error, 1)
			go func() { otherStages <- s.Stage(oh, op) }()
			if err := await(t, otherStages, "a stage of another blob while a commit waits for a hung stage"); err != nil {
				t.Fatalf("stage of %s: %v", other, err)
			}

			disk.unhang()
			if err := await(t, stages, "the stage once the disk answers"); err != nil {
				t.Fatalf("stage of %s: %v", hung, err)
			}
			r := await(t, committed, "the commit once the disk answers")
			if r.err != nil || r.n < 1 {
				t.Fatalf("commit = %d, %v; want %s committed", r.n, r.err, first)
			}
			if n, err := s.CommitStaged(blobA); err != nil || r.n+n != 2 {
				t.Fatalf("CommitStaged after the commit of %d = %d, %v; want both shards committed", r.n, n, err)
			}
			for id, p := range map[ID][]byte{first: wantFirst, hung: wantHung} {
				if _, got, err := s.Get(id, nil); err != nil || !bytes.Equal(got, p) {
					t.Fatalf("read of %s: %v; payload matches: %v", id, err, bytes.Equal(got, p))
				}
			}
			if n, err := s.CommitStaged(blobB); err != nil || n != 1 {
				t.Fatalf("CommitStaged(%s) = %d, %v; want 1", blobB, n, err)
			}
			sameUsageAsOpen(t, s, "after the commits")
		})
	}
}

// A stage hung in a write into its blob's staged part keeps no listing
// of the staged shards waiting: Staged (the orphan collector's) and
// StagedSize (a sync's bound) answer at once with the shards staged and
// complete, not the one being written. Once the disk answers they list
// it too.
func TestStagedListingsDoNotWaitForAStageHungOnTheDisk(t *testing.T) {
	disk := newHangNext(t)
	s := open(t, t.TempDir(), Options{WriteFault: func() error { disk.hang(); return nil }})
	first := ID{Blob: blobA, Block: 0, Index: 1}
	stage(t, s, first, testBlockSize, 1)
	wantSize := s.StagedSize(blobA)
	hung := ID{Blob: blobA, Block: 1, Index: 1}
	h, p := shard(hung, testBlockSize, 2)
	disk.armed.Store(true)
	stages := make(chan error, 1)
	go func() { stages <- s.Stage(h, p) }()
	await(t, disk.entered, "the stage's write to start")

	type listing struct {
		staged []StagedShard
		size   int64
	}
	listed := make(chan listing, 1)
	go func() { listed <- listing{s.Staged(), s.StagedSize(blobA)} }()
	l := await(t, listed, fmt.Sprintf("Staged and StagedSize while a stage of %s hangs in a write", hung))
	if len(l.staged) != 1 || l.staged[0].ID != first || l.size != wantSize {
		t.Fatalf("while a stage of %s hangs: Staged = %v, StagedSize = %d; want only %s, %d bytes", hung, l.staged, l.size, first, wantSize)
	}

	disk.unhang()
	if err := await(t, stages, "the stage once the disk answers"); err != nil {
		t.Fatalf("stage of %s: %v", hung, err)
	}
	if got := s.Staged(); len(got) != 2 {
		t.Fatalf("Staged once the stage ended = %v, want %s and %s", got, first, hung)
	}
	if got := s.StagedSize(blobA); got <= wantSize {
		t.Fatalf("StagedSize once the stage ended = %d, want more than %d", got, wantSize)
	}
}
