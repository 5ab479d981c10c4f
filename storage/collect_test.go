package storage

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// TestOrphanCollectionKeepsAShardRepairedUnderTheOrphansName: a shard file
// judged an orphan (the leader confirmed no blob places it here) is not
// deleted when, before the delete, repair stores a fresh shard under the
// same name and records this agent as its holder.
func TestOrphanCollectionKeepsAShardRepairedUnderTheOrphansName(t *testing.T) {
	s, fc := newTestStore(t, Config{OrphanGrace: time.Minute}, "n1", "n1", "n2", "n3", "n4")
	b := commitBlob(t, fc, "moved-back", 2, 1, "n2", "n3", "n4")
	payload := make([]byte, 50)
	h := shardstore.Header{ID: shardstore.ID{Blob: b.Id, Block: 0, Index: 2}, K: 2, M: 1, BlockLen: 100, ShardLen: 50, Sum: codec.Checksum(payload), BlockSize: 100}
	if err := s.shards.Put(h, payload); err != nil { // the orphan: the metadata places shard 2 on n4
		t.Fatal(err)
	}
	repaired := false
	fc.afterLeader = func() {
		if repaired {
			return
		}
		repaired = true
		// Repair rebuilds shard 2 here and records n1 as its holder.
		if err := s.shards.Put(h, payload); err != nil {
			t.Error(err)
		}
		if _, err := fc.apply(&pb.Command{Kind: &pb.Command_BlobShards{BlobShards: &pb.BlobShards{Id: b.Id,
			Shards: []*pb.ShardPlacement{{Block: 0, Index: 2, Node: "n1", Sum: h.Sum}}}}}); err != nil {
			t.Error(err)
		}
	}
	if n := s.CollectOrphans(context.Background(), time.Now().Add(time.Hour)); n != 0 {
		t.Errorf("orphan collection deleted %d shards", n)
	}
	if !repaired {
		t.Fatal("the leader was never asked about the orphan")
	}
	if _, _, err := s.shards.Get(h.ID, nil); err != nil {
		t.Fatalf("the repaired shard is gone: %v", err)
	}
	// The next pass sees it referenced and keeps it too.
	if n := s.CollectOrphans(context.Background(), time.Now().Add(time.Hour)); n != 0 {
		t.Errorf("second pass deleted %d shards", n)
	}
}

// TestOrphanCollectionKeepsAShardRepairIsStoringHere: a rebuilt shard
// that is durable here, in a file older than the orphan grace, but whose
// holder repair has not recorded yet, is kept: the leader answers it
// referenced while its repair reserves this agent for the block. Once
// the reservation ends with no holder recorded it is an orphan.
func TestOrphanCollectionKeepsAShardRepairIsStoringHere(t *testing.T) {
	s, fc := newTestStore(t, Config{OrphanGrace: time.Minute}, "n1", "n1", "n2", "n3", "n4")
	b := commitBlob(t, fc, "rebuilding", 2, 1, "n2", "n3", "n4")
	payload := make([]byte, 50)
	h := shardstore.Header{ID: shardstore.ID{Blob: b.Id, Block: 0, Index: 2}, K: 2, M: 1, BlockLen: 100, ShardLen: 50, Sum: codec.Checksum(payload), BlockSize: 100}
	if err := s.shards.Put(h, payload); err != nil { // rebuilt here; the metadata still says n4
		t.Fatal(err)
	}
	task := rebuilt{t: task{key: shardKey{b.Id, 0, 2}}}
	target, err := s.repair.target(b, 0, 2, reasonMissing)
	if err != nil || target != "n1" {
		t.Fatalf("repair target %q, %v; want n1, the only agent holding no shard of the block", target, err)
	}
	task.reserved = target
	if n := s.CollectOrphans(context.Background(), time.Now().Add(time.Hour)); n != 0 {
		t.Fatalf("orphan collection deleted %d shards repair is storing here", n)
	}
	if _, _, err := s.shards.Get(h.ID, nil); err != nil {
		t.Fatalf("the rebuilt shard is gone: %v", err)
	}
	s.repair.release([]rebuilt{task})
	if n := s.CollectOrphans(context.Background(), time.Now().Add(time.Hour)); n != 1 {
		t.Fatalf("after the reservation ended: orphan collection deleted %d shards, want the 1 orphan", n)
	}
}

// TestOrphanCollectionWaitsForANewLeaderToHoldWhatWasCommitted: a new
// leader's replica may lack the old leader's last entries (here, repair
// recording this agent as a shard's holder) until its own first entry
// commits. The leader answers which shards are referenced only once it
// is confirmed and its replica holds them: before, the agent keeps its
// shard; after, the recorded holder is seen and the shard stays.
func TestOrphanCollectionWaitsForANewLeaderToHoldWhatWasCommitted(t *testing.T) {
	s, fc := newTestStore(t, Config{OrphanGrace: time.Minute}, "n1", "n1", "n2", "n3", "n4")
	b := commitBlob(t, fc, "handed-over", 2, 1, "n2", "n3", "n4")
	payload := make([]byte, 50)
	h := shardstore.Header{ID: shardstore.ID{Blob: b.Id, Block: 0, Index: 2}, K: 2, M: 1, BlockLen: 100, ShardLen: 50, Sum: codec.Checksum(payload), BlockSize: 100}
	if err := s.shards.Put(h, payload); err != nil { // rebuilt here by the old leader's repair
		t.Fatal(err)
	}
	// The old leader's record of n1 as the holder is in the new leader's
	// log, not yet applied: its barrier applies it.
	record := &pb.Command{Kind: &pb.Command_BlobShards{BlobShards: &pb.BlobShards{Id: b.Id,
		Shards: []*pb.ShardPlacement{{Block: 0, Index: 2, Node: "n1", Sum: h.Sum}}}}}
	fc.confirmLeader = func(context.Context) error {
		return errors.New("new leader is still catching up")
	}
	if n := s.CollectOrphans(context.Background(), time.Now().Add(time.Hour)); n != 0 {
		t.Fatalf("orphan collection deleted %d shards before the new leader was confirmed", n)
	}
	barriers := 0
	fc.confirmLeader = func(context.Context) error {
		barriers++
		if barriers == 1 {
			_, err := fc.apply(record)
			return err
		}
		return nil
	}
	if n := s.CollectOrphans(context.Background(), time.Now().Add(time.Hour)); n != 0 {
		t.Fatalf("orphan collection deleted %d shards the old leader's repair had recorded", n)
	}
	if barriers == 0 {
		t.Fatal("the leader answered without confirming itself")
	}
	if _, _, err := s.shards.Get(h.ID, nil); err != nil {
		t.Fatalf("the recorded shard is gone: %v", err)
	}
}

// TestOrphanCollectionTakesOnlyTheOrphanBlocksOfAPartFile: a part file
// holding a shard its blob places here and one it does not loses only the
// latter; the other stays readable.
func TestOrphanCollectionTakesOnlyTheOrphanBlocksOfAPartFile(t *testing.T) {
	s, fc := newTestStore(t, Config{OrphanGrace: time.Minute}, "n1", "n1", "n2", "n3")
	b := commitBlob(t, fc, "half-orphan", 2, 1, "n2", "n3", "n1") // one block: shard 2 here
	payload := make([]byte, 50)
	var ids []shardstore.ID
	for block := range uint32(2) { // block 1 is no block of the blob's
		h := shardstore.Header{ID: shardstore.ID{Blob: b.Id, Block: block, Index: 2}, K: 2, M: 1, BlockLen: 100, ShardLen: 50,
			Sum: codec.Checksum(payload), BlockSize: 100}
		if err := s.shards.Put(h, payload); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, h.ID)
	}
	if n := s.CollectOrphans(context.Background(), time.Now().Add(time.Hour)); n != 1 {
		t.Fatalf("orphan collection deleted %d shards, want the 1 orphan", n)
	}
	if _, _, err := s.shards.Get(ids[0], nil); err != nil {
		t.Fatalf("the shard the blob places here: %v", err)
	}
	if _, _, err := s.shards.Get(ids[1], nil); !errors.Is(err, shardstore.ErrNotFound) {
		t.Fatalf("the orphan shard after collection: %v, want not found", err)
	}
}

// TestOrphanCollectionRemovesABadPartFileOfAGoneBlob: a part file whose
// header is bad lists no shards; it is removed once its blob is gone, and
// kept (for repair to replace) while the blob exists.
func TestOrphanCollectionRemovesABadPartFileOfAGoneBlob(t *testing.T) {
	s, fc := newTestStore(t, Config{OrphanGrace: time.Minute}, "n1", "n1", "n2", "n3")
	b := commitBlob(t, fc, "kept", 2, 1, "n2", "n3", "n1")
	payload := make([]byte, 50)
	var paths []string
	for _, blob := range []string{b.Id, strings.Repeat("cd", 16)} { // the second: no such blob
		h := shardstore.Header{ID: shardstore.ID{Blob: blob, Block: 0, Index: 2}, K: 2, M: 1, BlockLen: 100, ShardLen: 50,
			Sum: codec.Checksum(payload), BlockSize: 100}
		if err := s.shards.Put(h, payload); err != nil {
			t.Fatal(err)
		}
		path := s.shards.Path(h.ID)
		damagePartHeader(t, path)
		paths = append(paths, path)
	}
	s.CollectOrphans(context.Background(), time.Now().Add(time.Hour))
	if _, err := os.Stat(paths[0]); err != nil {
		t.Fatalf("bad part file of an existing blob: %v, want kept", err)
	}
	if _, err := os.Stat(paths[1]); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("bad part file of a gone blob: %v, want removed", err)
	}
}

// TestCheckHeldReportsWhatTheFilesLack: of the shards the metadata places
// on this agent, one held with the recorded CRC32C, one held with another
// and one not held at all: the check reports the last two (corrupt and
// lost) to the leader's repair, and not the first.
func TestCheckHeldReportsWhatTheFilesLack(t *testing.T) {
	s, fc := newTestStore(t, Config{}, "n1", "n1", "n2", "n3")
	payload := make([]byte, 50)
	sum := codec.Checksum(payload)
	b := commitBlocks(t, fc, "wiped", 3, 2, 1, sum, "n2", "n3", "n1")
	other := bytes.Repeat([]byte{7}, 50)
	for block, p := range [][]byte{payload, other} { // block 2: not held
		h := shardstore.Header{ID: shardstore.ID{Blob: b.Id, Block: uint32(block), Index: 2}, K: 2, M: 1, BlockLen: 100, ShardLen: 50,
			Sum: codec.Checksum(p), BlockSize: 100}
		if err := s.shards.Put(h, p); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.CheckHeld(context.Background()); n != 2 {
		t.Fatalf("CheckHeld reported %d shards, want 2 (block 1's other CRC32C, block 2's missing shard)", n)
	}
	reported := func(block uint32) fault {
		s.repair.mu.Lock()
		defer s.repair.mu.Unlock()
		return s.repair.corrupt[copyKey{shardKey{b.Id, block, 2}, "n1"}]
	}
	testwait.For(t, 10*time.Second, "the leader's repair to have the reports", func() bool {
		return reported(1) != 0 && reported(2) != 0
	})
	if f1, f2 := reported(1), reported(2); f1 != faultCorrupt || f2 != faultLost {
		t.Errorf("reported block 1 (another CRC32C) as %d, block 2 (no file) as %d; want corrupt (%d) and lost (%d)", f1, f2, faultCorrupt, faultLost)
	}
	if reported(0) != 0 {
		t.Fatal("the shard held with its recorded CRC32C was reported")
	}
}
