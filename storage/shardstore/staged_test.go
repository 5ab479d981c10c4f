package shardstore

import (
	"bytes"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func stage(t testing.TB, s *Store, id ID, blockLen uint32, seed uint64) (Header, []byte) {
	t.Helper()
	h, payload := shard(id, 4, 2, blockLen, seed)
	if err := s.Stage(h, payload); err != nil {
		t.Fatalf("Stage %s: %v", id, err)
	}
	return h, payload
}

func walked(t testing.TB, s *Store) int {
	t.Helper()
	n := 0
	if err := s.Walk(func(ID, int64, time.Time) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestStagedShardsBecomeVisibleAtCommit(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	ids := []ID{{blobA, 0, 0}, {blobA, 0, 1}, {blobA, 1, 5}}
	var payloads [][]byte
	for i, id := range ids {
		_, p := stage(t, s, id, 4096, uint64(i))
		payloads = append(payloads, p)
	}
	stage(t, s, ID{blobB, 0, 0}, 4096, 9) // another put's shard stays staged
	size := int64(HeaderSize + len(payloads[0]))
	wantUsage(t, s, 4*size, 4)
	if _, _, err := s.Get(ids[0], nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a staged shard: %v, want ErrNotFound", err)
	}
	if n := walked(t, s); n != 0 {
		t.Fatalf("Walk lists %d shards before commit, want 0", n)
	}
	if got := len(s.Staged()); got != 4 {
		t.Fatalf("Staged() lists %d, want 4", got)
	}
	n, err := s.CommitStaged(blobA)
	if err != nil || n != 3 {
		t.Fatalf("CommitStaged = %d, %v; want 3, nil", n, err)
	}
	for i, id := range ids {
		_, got, err := s.Get(id, nil)
		if err != nil || !bytes.Equal(got, payloads[i]) {
			t.Fatalf("Get %s after commit: %v", id, err)
		}
	}
	wantUsage(t, s, 4*size, 4)
	if n := walked(t, s); n != 3 {
		t.Fatalf("Walk lists %d shards after commit, want 3", n)
	}
	if got := s.Staged(); len(got) != 1 || got[0].ID.Blob != blobB {
		t.Fatalf("Staged() after commit = %v, want blob B's shard", got)
	}
	if n, err := s.CommitStaged(blobA); n != 0 || err != nil {
		t.Fatalf("second CommitStaged = %d, %v; want 0, nil", n, err)
	}
}

func TestStagedShardsDiscardedAndCrashed(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	put(t, s, ID{blobA, 0, 0}, 4096, 1)
	h, _ := stage(t, s, ID{blobA, 0, 1}, 4096, 2)
	stage(t, s, ID{blobA, 0, 2}, 4096, 3)
	size := int64(HeaderSize + h.ShardLen)
	s.Discard(ID{blobA, 0, 1})
	s.Discard(ID{blobA, 7, 7}) // not staged: no-op
	wantUsage(t, s, 2*size, 2)

	// A crash before commit: the next Open removes the staged file.
	s2 := open(t, dir, Options{})
	wantUsage(t, s2, size, 1)
	if len(s2.Staged()) != 0 {
		t.Fatal("a reopened store lists staged shards")
	}
	if n, err := s2.CommitStaged(blobA); n != 0 || err != nil {
		t.Fatalf("CommitStaged after reopen = %d, %v; want nothing", n, err)
	}
}

func TestDeleteBlobRemovesStagedShards(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	put(t, s, ID{blobA, 0, 0}, 4096, 1)
	stage(t, s, ID{blobA, 0, 1}, 4096, 2)
	if _, err := s.DeleteBlob(blobA); err != nil {
		t.Fatal(err)
	}
	wantUsage(t, s, 0, 0)
	if n, err := s.CommitStaged(blobA); n != 0 || err != nil {
		t.Fatalf("CommitStaged after DeleteBlob = %d, %v; want nothing", n, err)
	}
}

func TestStageChecksLikePut(t *testing.T) {
	h, payload := shard(ID{blobA, 0, 0}, 4, 2, 4096, 1)
	one := int64(HeaderSize + len(payload))
	s := open(t, t.TempDir(), Options{MaxBytes: 2 * one})
	bad := h
	bad.Sum++
	if err := s.Stage(bad, payload); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Stage with a wrong checksum: %v, want ErrCorrupt", err)
	}
	if err := s.Stage(h, payload); err != nil {
		t.Fatal(err)
	}
	// Staging the same id again replaces the first file.
	if err := s.Stage(h, payload); err != nil {
		t.Fatalf("Stage again: %v", err)
	}
	wantUsage(t, s, one, 1)
	h2, p2 := shard(ID{blobA, 0, 1}, 4, 2, 4096, 2)
	if err := s.Stage(h2, p2); err != nil {
		t.Fatal(err)
	}
	h3, p3 := shard(ID{blobA, 0, 2}, 4, 2, 4096, 3)
	if err := s.Stage(h3, p3); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Stage past MaxBytes: %v, want ErrNoSpace", err)
	}
	wantUsage(t, s, 2*one, 2)
}

// stampOf returns the Stamp WalkStamped gives shard id.
func stampOf(t testing.TB, s *Store, id ID) Stamp {
	t.Helper()
	var out Stamp
	found := false
	err := s.WalkStamped(func(got ID, st Stamp) error {
		if got == id {
			out, found = st, true
		}
		return nil
	})
	if err != nil || !found {
		t.Fatalf("WalkStamped: %v, found %s: %v", err, id, found)
	}
	return out
}

// TestDeleteIfSameKeepsARewrittenShard: a shard judged from one file is
// not deleted once another file took its name (a Put, or a commit of a
// staged shard); the file it was judged from is.
func TestDeleteIfSameKeepsARewrittenShard(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	id := ID{blobA, 0, 1}
	h, _ := put(t, s, id, 4096, 1)
	size := int64(HeaderSize) + int64(h.ShardLen)
	for _, rewrite := range []func(){
		func() { put(t, s, id, 4096, 2) },
		func() {
			stage(t, s, id, 4096, 3)
			if _, err := s.CommitStaged(blobA); err != nil {
				t.Fatal(err)
			}
		},
	} {
		judged := stampOf(t, s, id)
		rewrite()
		if deleted, err := s.DeleteIfSame(id, judged); err != nil || deleted {
			t.Fatalf("DeleteIfSame of a rewritten shard: deleted %v, %v; want kept", deleted, err)
		}
		if _, _, err := s.Get(id, nil); err != nil {
			t.Fatalf("rewritten shard after DeleteIfSame: %v", err)
		}
		wantUsage(t, s, size, 1)
	}
	if deleted, err := s.DeleteIfSame(id, stampOf(t, s, id)); err != nil || !deleted {
		t.Fatalf("DeleteIfSame of the file as judged: deleted %v, %v; want deleted", deleted, err)
	}
	wantUsage(t, s, 0, 0)
	if deleted, err := s.DeleteIfSame(id, Stamp{}); err != nil || deleted {
		t.Fatalf("DeleteIfSame of a missing shard: deleted %v, %v", deleted, err)
	}
}

// TestDiscardIfSameKeepsAShardStagedAgain: a staged shard is discarded
// only if it is the one listed by Staged, not one staged again since.
func TestDiscardIfSameKeepsAShardStagedAgain(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	id := ID{blobA, 0, 0}
	stage(t, s, id, 4096, 1)
	judged := s.Staged()[0].At
	s.Discard(id)
	stage(t, s, id, 4096, 2)
	if s.DiscardIfSame(id, judged) {
		t.Fatal("DiscardIfSame removed a shard staged after the one judged")
	}
	if n, err := s.CommitStaged(blobA); err != nil || n != 1 {
		t.Fatalf("CommitStaged after DiscardIfSame: %d, %v; want the shard staged again", n, err)
	}
}

func TestSyncDelayPrecedesEveryShardFsync(t *testing.T) {
	var calls atomic.Int32
	s := open(t, t.TempDir(), Options{SyncDelay: func() time.Duration {
		calls.Add(1)
		return time.Millisecond
	}})
	put(t, s, ID{blobA, 0, 0}, 4096, 1)
	if n := calls.Load(); n != 1 {
		t.Fatalf("a Put called SyncDelay %d times, want once (its shard file's fsync)", n)
	}
	stage(t, s, ID{blobB, 0, 0}, 4096, 2)
	stage(t, s, ID{blobB, 0, 1}, 4096, 3)
	if n, err := s.CommitStaged(blobB); n != 2 || err != nil {
		t.Fatalf("CommitStaged = %d, %v; want 2, nil", n, err)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("a Put and two staged shards called SyncDelay %d times, want 3 (one per shard file's fsync)", n)
	}
}
