package shardstore

import (
	"bytes"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

func stage(t testing.TB, s *Store, id ID, blockLen uint32, seed uint64) (Header, []byte) {
	t.Helper()
	h, payload := shard(id, blockLen, seed)
	if err := s.Stage(h, payload); err != nil {
		t.Fatalf("Stage %s: %v", id, err)
	}
	return h, payload
}

func TestStagedShardsBecomeVisibleAtCommit(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	ids := []ID{{blobA, 0, 0}, {blobA, 0, 1}, {blobA, 1, 5}}
	var payloads [][]byte
	for i, id := range ids {
		_, p := stage(t, s, id, testBlockSize, uint64(i))
		payloads = append(payloads, p)
	}
	stage(t, s, ID{blobB, 0, 0}, testBlockSize, 9) // another put's shard stays staged
	wantUsage(t, s, 3*partSize(1)+partSize(2), 4)
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
	wantUsage(t, s, 3*partSize(1)+partSize(2), 4)
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
	put(t, s, ID{blobA, 0, 0}, testBlockSize, 1)
	stage(t, s, ID{blobA, 0, 1}, testBlockSize, 2)
	stage(t, s, ID{blobA, 1, 1}, testBlockSize, 2)
	stage(t, s, ID{blobA, 0, 2}, testBlockSize, 3)
	s.Discard(ID{blobA, 0, 1})
	s.Discard(ID{blobA, 7, 7}) // not staged: no-op
	wantUsage(t, s, partSize(1)+partSize(2)+partSize(1), 3)
	s.Discard(ID{blobA, 1, 1}) // the part's last staged shard: the part goes
	wantUsage(t, s, 2*partSize(1), 2)
	if got := blobFiles(t, s, blobA); len(got) != 2 {
		t.Fatalf("blob directory holds %q, want the part file and one staged file", got)
	}

	// A crash before commit: the next Open removes the staged file.
	s2 := open(t, dir, Options{})
	wantUsage(t, s2, partSize(1), 1)
	if len(s2.Staged()) != 0 {
		t.Fatal("a reopened store lists staged shards")
	}
	if n, err := s2.CommitStaged(blobA); n != 0 || err != nil {
		t.Fatalf("CommitStaged after reopen = %d, %v; want nothing", n, err)
	}
}

func TestADiscardedShardIsNotCommitted(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	stage(t, s, ID{blobA, 0, 0}, testBlockSize, 1)
	stage(t, s, ID{blobA, 1, 0}, testBlockSize, 1)
	s.Discard(ID{blobA, 0, 0})
	if n, err := s.CommitStaged(blobA); n != 1 || err != nil {
		t.Fatalf("CommitStaged = %d, %v; want 1", n, err)
	}
	if _, _, err := s.Get(ID{blobA, 0, 0}, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a discarded shard after commit = %v, want ErrNotFound", err)
	}
	if _, _, err := s.Get(ID{blobA, 1, 0}, nil); err != nil {
		t.Fatal(err)
	}
	wantUsage(t, s, partSize(2), 1)
}

func TestDeleteBlobRemovesStagedShards(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	put(t, s, ID{blobA, 0, 0}, testBlockSize, 1)
	stage(t, s, ID{blobA, 0, 1}, testBlockSize, 2)
	if _, err := s.DeleteBlob(blobA); err != nil {
		t.Fatal(err)
	}
	wantUsage(t, s, 0, 0)
	if n, err := s.CommitStaged(blobA); n != 0 || err != nil {
		t.Fatalf("CommitStaged after DeleteBlob = %d, %v; want nothing", n, err)
	}
}

func TestStageChecksLikePut(t *testing.T) {
	h, payload := shard(ID{blobA, 0, 0}, testBlockSize, 1)
	s := open(t, t.TempDir(), Options{MaxBytes: 2 * partSize(1)})
	bad := h
	bad.Sum++
	if err := s.Stage(bad, payload); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Stage with a wrong checksum: %v, want ErrCorrupt", err)
	}
	if err := s.Stage(h, payload); err != nil {
		t.Fatal(err)
	}
	// Staging the same id again overwrites its slot.
	if err := s.Stage(h, payload); err != nil {
		t.Fatalf("Stage again: %v", err)
	}
	wantUsage(t, s, partSize(1), 1)
	h2, p2 := shard(ID{blobA, 0, 1}, testBlockSize, 2)
	if err := s.Stage(h2, p2); err != nil {
		t.Fatal(err)
	}
	h3, p3 := shard(ID{blobA, 1, 1}, testBlockSize, 3)
	if err := s.Stage(h3, p3); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Stage past MaxBytes: %v, want ErrNoSpace", err)
	}
	wantUsage(t, s, 2*partSize(1), 2)
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

// TestDeleteIfSameKeepsARewrittenShard: shards judged from one version of
// a part file are not deleted once it was written (a Put, or a commit of
// a staged shard); the version they were judged from is.
func TestDeleteIfSameKeepsARewrittenShard(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	id := ID{blobA, 0, 1}
	put(t, s, id, testBlockSize, 1)
	for _, rewrite := range []func(){
		func() { put(t, s, id, testBlockSize, 2) },
		func() {
			stage(t, s, id, testBlockSize, 3)
			if _, err := s.CommitStaged(blobA); err != nil {
				t.Fatal(err)
			}
		},
	} {
		// The modification time has a granularity: make the rewrite's
		// differ from the judged one.
		old := time.Now().Add(-time.Hour)
		os.Chtimes(s.Path(id), old, old)
		judged := stampOf(t, s, id)
		rewrite()
		if n, err := s.DeleteIfSame(id.Blob, id.Index, []uint32{id.Block}, judged); err != nil || n != 0 {
			t.Fatalf("DeleteIfSame of a rewritten part: deleted %d, %v; want kept", n, err)
		}
		if _, _, err := s.Get(id, nil); err != nil {
			t.Fatalf("rewritten shard after DeleteIfSame: %v", err)
		}
		wantUsage(t, s, partSize(1), 1)
	}
	if n, err := s.DeleteIfSame(id.Blob, id.Index, []uint32{id.Block}, stampOf(t, s, id)); err != nil || n != 1 {
		t.Fatalf("DeleteIfSame of the file as judged: deleted %d, %v; want 1", n, err)
	}
	wantUsage(t, s, 0, 0)
	if n, err := s.DeleteIfSame(id.Blob, id.Index, []uint32{id.Block}, Stamp{}); err != nil || n != 0 {
		t.Fatalf("DeleteIfSame of a missing shard: deleted %d, %v", n, err)
	}
}

// TestDeleteIfSameKeepsAPartFileWhoseHeaderTurnedBad: an orphan block
// judged in a part file whose header then reads as bad (a bit the disk
// flipped, which leaves the file's stamp as it was) is not deleted by
// removing the whole file: the part's other blocks, which a blob may
// still place here, stay, and read again once the header does. Only a
// bad part file judged whole (no blocks named) goes whole.
func TestDeleteIfSameKeepsAPartFileWhoseHeaderTurnedBad(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	stored := stageBlob(t, s, 4, 0)
	if _, err := s.CommitStaged(blobA); err != nil {
		t.Fatal(err)
	}
	orphan := ID{blobA, 1, 0}
	judged := stampOf(t, s, orphan)
	path := s.Path(orphan)
	flipHeader := func() { // its checksum fails; the stamp stays
		t.Helper()
		flip(t, path, 20)
		if err := os.Chtimes(path, judged.Mod(), judged.Mod()); err != nil {
			t.Fatal(err)
		}
	}
	flipHeader()
	if n, err := s.DeleteIfSame(orphan.Blob, orphan.Index, []uint32{orphan.Block}, judged); err == nil || n != 0 {
		t.Fatalf("DeleteIfSame of a block of a part file whose header turned bad: deleted %d, %v; want an error, nothing deleted", n, err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("part file after DeleteIfSame of one of its blocks: %v", err)
	}
	flipHeader()
	for id, want := range stored {
		if _, got, err := s.Get(id, nil); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Get %s once the header reads again: %v", id, err)
		}
	}
	flipHeader()
	if n, err := s.DeleteIfSame(orphan.Blob, orphan.Index, nil, judged); err != nil || n != 0 {
		t.Fatalf("DeleteIfSame of the bad part file as a whole: %d, %v", n, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("bad part file judged whole after DeleteIfSame: %v, want it removed", err)
	}
}

// TestDiscardIfSameKeepsAShardStagedAgain: a staged shard is discarded
// only if it is the one listed by Staged, not one staged again since.
func TestDiscardIfSameKeepsAShardStagedAgain(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	id := ID{blobA, 0, 0}
	stage(t, s, id, testBlockSize, 1)
	judged := s.Staged()[0].At
	s.Discard(id)
	stage(t, s, id, testBlockSize, 2)
	if s.DiscardIfSame(id, judged) {
		t.Fatal("DiscardIfSame removed a shard staged after the one judged")
	}
	if n, err := s.CommitStaged(blobA); err != nil || n != 1 {
		t.Fatalf("CommitStaged after DiscardIfSame: %d, %v; want the shard staged again", n, err)
	}
}

func TestOneFsyncPerPartFile(t *testing.T) {
	var calls atomic.Int32
	s := open(t, t.TempDir(), Options{SyncDelay: func() time.Duration {
		calls.Add(1)
		return time.Millisecond
	}})
	put(t, s, ID{blobA, 0, 0}, testBlockSize, 1)
	if n := calls.Load(); n != 1 {
		t.Fatalf("a Put called SyncDelay %d times, want once (its part file's fsync)", n)
	}
	for b := range uint32(20) {
		stage(t, s, ID{blobB, b, 0}, testBlockSize, 2)
		stage(t, s, ID{blobB, b, 1}, testBlockSize, 3)
	}
	if n, err := s.CommitStaged(blobB); n != 40 || err != nil {
		t.Fatalf("CommitStaged = %d, %v; want 40, nil", n, err)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("a Put and 40 staged shards in two part files called SyncDelay %d times, want 3 (one per part file)", n)
	}
}

// StageSummed trusts its caller's checksum (the agent's encoder computed
// it from the same memory a moment ago) instead of computing it again;
// the read checks the bytes on disk against it as for any shard.
func TestStageSummedTrustsTheChecksumAndTheReadChecksIt(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	h, payload := shard(ID{blobA, 0, 0}, testBlockSize, 1)
	bad := h
	bad.Sum++
	if err := s.StageSummed(bad, payload); err != nil {
		t.Fatalf("StageSummed with a checksum it does not compute: %v", err)
	}
	short := h
	short.ShardLen--
	if err := s.StageSummed(short, payload); !errors.Is(err, ErrInvalidHeader) {
		t.Fatalf("StageSummed with a wrong length: %v, want ErrInvalidHeader", err)
	}
	if _, err := s.CommitStaged(blobA); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(h.ID, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get of a shard staged with a wrong checksum: %v, want ErrCorrupt", err)
	}
	h2, p2 := shard(ID{blobA, 0, 1}, testBlockSize, 2)
	if err := s.StageSummed(h2, p2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CommitStaged(blobA); err != nil {
		t.Fatal(err)
	}
	if _, got, err := s.Get(h2.ID, nil); err != nil || !bytes.Equal(got, p2) {
		t.Fatalf("Get of a shard staged with its checksum: %v", err)
	}
}

// A shard staged in pieces (as it arrived, in HTTP/2 frames) is checked
// against its sum over the pieces and reads back whole once committed;
// a wrong sum or length stages nothing.
func TestStagePiecesWritesTheShardFromItsPieces(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	h, p := shard(ID{blobA, 0, 0}, testBlockSize, 7)
	split := func(p []byte, sizes ...int) [][]byte {
		var out [][]byte
		for _, n := range sizes {
			out = append(out, p[:n])
			p = p[n:]
		}
		return append(out, p)
	}
	if len(p) < 100 {
		t.Fatalf("test shard of %d bytes: too short to split", len(p))
	}
	bad := h
	bad.Sum++
	if err := s.StagePieces(bad, split(p, 10, 0, 33)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("StagePieces with a wrong sum: %v, want ErrCorrupt", err)
	}
	if err := s.StagePieces(h, split(p[:len(p)-1], 10)); !errors.Is(err, ErrInvalidHeader) {
		t.Fatalf("StagePieces one byte short: %v, want ErrInvalidHeader", err)
	}
	if err := s.StagePieces(h, split(p, 10, 0, 33)); err != nil {
		t.Fatal(err)
	}
	h2, p2 := shard(ID{blobA, 1, 0}, 1001, 8)
	if err := s.StagePieces(h2, split(p2, 1)); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CommitStaged(blobA); err != nil || n != 2 {
		t.Fatalf("CommitStaged = %d, %v; want the 2 shards staged in pieces", n, err)
	}
	for id, want := range map[ID][]byte{{blobA, 0, 0}: p, {blobA, 1, 0}: p2} {
		if _, got, err := s.Get(id, nil); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("shard %s staged in pieces reads back %d bytes, %v; want its %d bytes", id, len(got), err, len(want))
		}
	}
}

// TestCommitStagedShardsCommitsOnlyThoseListed: shards of one blob staged
// by two writers, in one part file and in two: a commit listing one
// writer's shards makes exactly those durable and counts them; the other
// writer's stay staged (and unreadable) until its own commit, and a
// listed shard that is not staged is not counted.
func TestCommitStagedShardsCommitsOnlyThoseListed(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	mine := []ID{{blobA, 0, 2}, {blobA, 3, 1}}
	theirs := []ID{{blobA, 1, 2}, {blobA, 2, 1}, {blobA, 4, 0}}
	payloads := make(map[ID][]byte)
	for i, id := range append(append([]ID{}, mine...), theirs...) {
		_, payloads[id] = stage(t, s, id, testBlockSize, uint64(i))
	}
	lost := ID{blobA, 5, 2} // listed, never staged
	n, err := s.CommitStagedShards(blobA, append(append([]ID{}, mine...), lost))
	if err != nil || n != len(mine) {
		t.Fatalf("CommitStagedShards(mine and a lost one) = %d, %v; want %d, nil", n, err, len(mine))
	}
	readable := func(id ID) bool {
		_, got, err := s.Get(id, nil)
		return err == nil && bytes.Equal(got, payloads[id])
	}
	for _, id := range mine {
		if !readable(id) {
			t.Errorf("committed shard %s does not read back", id)
		}
	}
	for _, id := range theirs {
		if readable(id) {
			t.Errorf("the other writer's shard %s was committed", id)
		}
	}
	if got := len(s.Staged()); got != len(theirs) {
		t.Fatalf("%d shards still staged, want the other writer's %d", got, len(theirs))
	}
	// Five files, each as long as the last block it held: index 2
	// durable (block 0) and staged (1), index 1 durable (3) and staged
	// (2; 3 moved out), index 0 staged (4).
	wantUsage(t, s, 5*PartHeaderSize+(1+2+4+4+5)*slot, len(mine)+len(theirs))
	n, err = s.CommitStagedShards(blobA, theirs)
	if err != nil || n != len(theirs) {
		t.Fatalf("the other writer's CommitStagedShards = %d, %v; want %d, nil", n, err, len(theirs))
	}
	for id := range payloads {
		if !readable(id) {
			t.Errorf("shard %s does not read back after both commits", id)
		}
	}
	if got := s.Staged(); len(got) != 0 {
		t.Fatalf("still staged after both commits: %v", got)
	}
	if _, err := s.CommitStagedShards(blobA, []ID{{blobB, 0, 0}}); !errors.Is(err, ErrInvalidID) {
		t.Fatalf("CommitStagedShards of another blob's shard: %v, want ErrInvalidID", err)
	}
}

// TestShardStagedIntoAPartTakenForCommitGoesIntoANewOne: a stager that
// looked its part up just before a commit took it (the race of a stage
// with a commit) does not write into the taken part, which would make
// durable, or lose, a shard the commit did not count: the part refuses
// it, and the stage goes into a new part that a later commit takes.
func TestShardStagedIntoAPartTakenForCommitGoesIntoANewOne(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	stage(t, s, ID{blobA, 0, 0}, testBlockSize, 1)
	s.stagedMu.Lock()
	looked := s.staged[blobA][0] // the stager's lookup
	s.stagedMu.Unlock()
	taken := s.takeStaged(blobA, 0) // the commit's
	late, payload := shard(ID{blobA, 1, 0}, testBlockSize, 2)
	if err := looked.add(s, &late, [][]byte{payload}); !errors.Is(err, errSealed) {
		t.Fatalf("a shard added to a part taken for commit: %v, want it refused", err)
	}
	if err := s.stage(late, [][]byte{payload}); err != nil {
		t.Fatalf("the stage, retried: %v", err)
	}
	if n, err := s.commitPart(taken); err != nil || n != 1 {
		t.Fatalf("the taken part committed %d shards, %v; want its 1", n, err)
	}
	if got := s.Staged(); len(got) != 1 || got[0].ID != (ID{blobA, 1, 0}) {
		t.Fatalf("staged after the commit: %v, want the late shard", got)
	}
	if n, err := s.CommitStaged(blobA); err != nil || n != 1 {
		t.Fatalf("the next commit: %d, %v; want the late shard", n, err)
	}
	for b := range uint32(2) {
		if _, _, err := s.Get(ID{blobA, b, 0}, nil); err != nil {
			t.Fatalf("block %d: %v", b, err)
		}
	}
}
