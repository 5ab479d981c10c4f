package storage

import (
	"context"
	"strings"
	"testing"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// commitBlob commits a blob of one block with the given holders ("" for a
// missing shard) straight through the fake cluster's state machine.
func commitBlob(t testing.TB, fc *fakeCluster, name string, k, m int, holders ...string) *pb.Blob {
	t.Helper()
	id := strings.Repeat("ab", 16)
	if _, err := fc.apply(&pb.Command{Kind: &pb.Command_BlobPending{BlobPending: &pb.BlobPending{Id: id, Name: name, Node: fc.self}}}); err != nil {
		t.Fatal(err)
	}
	b := &pb.Blob{Name: name, Id: id, Size: 100, DataShards: uint32(k), ParityShards: uint32(m), BlockSize: 4096}
	blk := &pb.BlobBlock{Len: 100, Sums: make([]uint32, k+m)}
	for _, h := range holders {
		ref := uint32(0)
		if h != "" {
			ref = b.HolderRef(h)
		}
		blk.Holders = append(blk.Holders, ref)
	}
	b.Blocks = []*pb.BlobBlock{blk}
	if _, err := fc.apply(&pb.Command{Kind: &pb.Command_BlobCommit{BlobCommit: &pb.BlobCommit{Blob: b}}}); err != nil {
		t.Fatal(err)
	}
	return fc.fsm.BlobByID(id)
}

// TestRepairWorkersNeverPickOneAgentForTwoShardsOfABlock: two shards of
// one block rebuilt at once (by two workers) go to two different agents,
// and an agent is free for the block again once its shard is recorded.
func TestRepairWorkersNeverPickOneAgentForTwoShardsOfABlock(t *testing.T) {
	s, fc := newTestStore(t, Config{}, "n1", "n1", "n2", "n3", "n4", "n5")
	b := commitBlob(t, fc, "two-lost", 2, 1, "n1", "", "")
	first, err := s.repair.target(b, 0, 1, reasonMissing)
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.repair.target(b, 0, 2, reasonMissing)
	if err != nil {
		t.Fatal(err)
	}
	if first == second || first == "n1" || second == "n1" {
		t.Fatalf("shards 1 and 2 of a block whose shard 0 is on n1 placed on %s and %s: want two other distinct agents", first, second)
	}
	s.repair.release([]rebuilt{
		{t: task{key: shardKey{b.Id, 0, 1}}, reserved: first},
		{t: task{key: shardKey{b.Id, 0, 2}}, reserved: second},
	})
	if again, err := s.repair.target(b, 0, 1, reasonMissing); err != nil || again != first {
		t.Fatalf("after release, shard 1 goes to %s (%v), want %s again", again, err, first)
	}
}

// TestRepairDoesNotRecordAShardItsAgentLost: a rebuilt shard that its
// target no longer has staged at sync time (the agent restarted between
// the two) is failed, so its agent is not recorded as a holder.
func TestRepairDoesNotRecordAShardItsAgentLost(t *testing.T) {
	s, fc := newTestStore(t, Config{}, "n1", "n1", "n2", "n3")
	b := commitBlob(t, fc, "restarted-target", 2, 1, "n2", "n3", "")
	payload := make([]byte, 50)
	h := shardstore.Header{ID: shardstore.ID{Blob: b.Id, Block: 0, Index: 2}, K: 2, M: 1, BlockLen: 100, ShardLen: 50, Sum: codec.Checksum(payload), BlockSize: 100}
	if err := s.shards.Stage(h, payload); err != nil {
		t.Fatal(err)
	}
	s.shards.Discard(h.ID) // what a restart of the agent does to a staged shard
	results := []rebuilt{{
		t:      task{key: shardKey{b.Id, 0, 2}, reason: reasonMissing},
		placed: &pb.ShardPlacement{Block: 0, Index: 2, Node: "n1", Sum: h.Sum},
	}}
	s.repair.syncRebuilt(context.Background(), results)
	if results[0].err == nil {
		t.Fatal("a rebuilt shard its agent no longer had was taken as durable")
	}
}
