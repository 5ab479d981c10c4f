package storage

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/storage/codec"
)

// A peer's PutShard that no agent would send (a block longer than its
// shard says, a block size beyond the largest, a block past the largest
// blob) is refused with InvalidArgument naming what was wrong, and
// nothing is stored.
func TestPutShardRefusesImpossibleShards(t *testing.T) {
	s, _ := newTestStore(t, Config{}, "n1", "n1")
	id := "0123456789abcdef0123456789abcdef"
	payload := []byte{1}
	ok := func() *pb.PutShardRequest {
		return &pb.PutShardRequest{Ref: &pb.ShardRef{BlobId: id}, DataShards: 1, BlockLen: 1, BlockSize: MinBlockSize,
			Sum: crc32.Checksum(payload, crc32.MakeTable(crc32.Castagnoli)), Payload: payload}
	}
	for _, c := range []struct {
		name  string
		edit  func(*pb.PutShardRequest)
		words []string
	}{
		{"a 4 GiB block in a one-byte shard", func(r *pb.PutShardRequest) { r.BlockLen, r.BlockSize = math.MaxUint32, math.MaxUint32 }, []string{"block size"}},
		{"a block longer than its shard", func(r *pb.PutShardRequest) { r.BlockLen = 100 }, []string{"100-byte block"}},
		{"the last block there can be", func(r *pb.PutShardRequest) { r.Ref.Block = math.MaxUint32 }, []string{"block 4294967295", "max blob size"}},
		{"a block size beyond the largest", func(r *pb.PutShardRequest) { r.BlockSize = MaxBlockSize + 1 }, []string{"block size"}},
	} {
		req := ok()
		c.edit(req)
		_, err := s.ShardServer().PutShard(context.Background(), req)
		if !errors.Is(err, apierr.ErrInvalidArgument) {
			t.Errorf("%s: %v, want InvalidArgument", c.name, err)
			continue
		}
		for _, w := range c.words {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q, want it to name %q", c.name, err, w)
			}
		}
	}
	if _, err := s.ShardServer().GetShard(context.Background(), &pb.GetShardRequest{Ref: &pb.ShardRef{BlobId: id}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused shard was stored: get answered %v", err)
	}
	if _, err := s.ShardServer().PutShard(context.Background(), ok()); err != nil {
		t.Fatalf("a shard an agent sends: %v", err)
	}
}

// HeldShards asks for each of a blob's shard indexes at most once: a
// request naming more indexes than a blob has, or one twice, is refused
// with InvalidArgument instead of a file lookup (and an answer) per entry.
func TestHeldShardsRefusesRepeatedIndexes(t *testing.T) {
	s, _ := newTestStore(t, Config{}, "n1", "n1")
	id := "0123456789abcdef0123456789abcdef"
	for _, c := range []struct {
		indexes []uint32
		words   string
	}{
		{make([]uint32, 1_000_000), "1000000 shard indexes, a blob has at most 256"},
		{[]uint32{3, 1, 3}, "shard index 3 is asked for twice"},
		{[]uint32{256}, "shard index 256"},
	} {
		_, err := s.ShardServer().HeldShards(context.Background(), &pb.HeldShardsRequest{BlobId: id, Indexes: c.indexes})
		if !errors.Is(err, apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), c.words) {
			t.Errorf("HeldShards of %d indexes: %v, want InvalidArgument saying %q", len(c.indexes), err, c.words)
		}
	}
	resp, err := s.ShardServer().HeldShards(context.Background(), &pb.HeldShardsRequest{BlobId: id, Indexes: []uint32{0, 1, 255}})
	if err != nil || len(resp.Parts) != 0 {
		t.Fatalf("HeldShards of distinct indexes of an unknown blob: %v, %v; want none held", resp, err)
	}
}

// deleteRecorder is a peer's Shards API that records the DeleteShards
// requests it gets and answers them as srv does.
type deleteRecorder struct {
	pb.ShardsClient // only DeleteShards is called
	srv             *ShardServer
	sizes           []int
}

func (r *deleteRecorder) DeleteShards(ctx context.Context, req *pb.DeleteShardsRequest, _ ...grpc.CallOption) (*pb.DeleteShardsResponse, error) {
	r.sizes = append(r.sizes, len(req.BlobIds))
	return r.srv.DeleteShards(ctx, req)
}

// A DeleteShards request naming more blob ids than an agent takes at
// once is refused before any is looked at, and an agent asking a peer to
// delete more sends them in requests the peer takes.
func TestDeleteShardsComesInBatchesAPeerTakes(t *testing.T) {
	s, fc := newTestStore(t, Config{}, "n1", "n1", "n2")
	ids := make([]string, 2*maxDeleteShardIDs+100)
	for i := range ids {
		ids[i] = fmt.Sprintf("%032x", i+1)
	}
	_, err := s.ShardServer().DeleteShards(context.Background(), &pb.DeleteShardsRequest{BlobIds: ids[:maxDeleteShardIDs+1]})
	if !errors.Is(err, apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), fmt.Sprint(maxDeleteShardIDs+1)) {
		t.Fatalf("DeleteShards of %d ids: %v, want InvalidArgument naming the count", maxDeleteShardIDs+1, err)
	}
	if _, err := s.ShardServer().DeleteShards(context.Background(), &pb.DeleteShardsRequest{BlobIds: ids[:maxDeleteShardIDs]}); err != nil {
		t.Fatalf("DeleteShards of %d ids: %v", maxDeleteShardIDs, err)
	}
	peer := &deleteRecorder{srv: s.ShardServer()}
	fc.peer = func(string) (pb.ShardsClient, error) { return peer, nil }
	s.deleteShardsOn(context.Background(), []string{"n2"}, ids, 0)
	if want := []int{maxDeleteShardIDs, maxDeleteShardIDs, 100}; !slices.Equal(peer.sizes, want) {
		t.Fatalf("DeleteShards requests of %v ids, want %v", peer.sizes, want)
	}
}

// A peer's PutShard whose k+m no blob can have is refused with
// InvalidArgument naming the field and its value, each field checked on
// its own before they are added (258 + 4294967040 would wrap to 2 in
// uint32, and 258 fit a part file's byte as 2), and nothing is stored,
// staged or not.
func TestPutShardRefusesSchemesOutOfRange(t *testing.T) {
	s, _ := newTestStore(t, Config{}, "n1", "n1")
	id := "0123456789abcdef0123456789abcdef"
	for _, c := range []struct {
		name  string
		k, m  uint32
		words string
	}{
		{"a sum that wraps", 258, 0xFFFFFF00, "data_shards 258"},
		{"no data shard", 0, 2, "data_shards 0"},
		{"data shards past a byte", 256, 0, "data_shards 256"},
		{"data shards past a uint32 sum", math.MaxUint32, 1, "data_shards 4294967295"},
		{"parity shards past a byte", 2, 256, "parity_shards 256"},
		{"parity shards that wrap the sum", 1, math.MaxUint32, "parity_shards 4294967295"},
		{"more shards than a block has", 200, 100, "data_shards 200 + parity_shards 100 = 300 shards"},
	} {
		for _, staged := range []bool{false, true} {
			payload := make([]byte, codec.ShardLen(MinBlockSize, 2)) // 2: the k the wrapping sum would leave
			req := &pb.PutShardRequest{Ref: &pb.ShardRef{BlobId: id}, DataShards: c.k, ParityShards: c.m, Staged: staged,
				BlockLen: MinBlockSize, BlockSize: MinBlockSize, Sum: codec.Checksum(payload), Payload: payload}
			_, err := s.ShardServer().PutShard(context.Background(), req)
			if !errors.Is(err, apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), c.words) {
				t.Errorf("%s (staged %v): %v, want InvalidArgument naming %q", c.name, staged, err, c.words)
			}
		}
	}
	if _, err := s.ShardServer().GetShard(context.Background(), &pb.GetShardRequest{Ref: &pb.ShardRef{BlobId: id}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused shard was stored: get answered %v", err)
	}
	if staged := s.shards.Staged(); len(staged) != 0 {
		t.Fatalf("refused shards were staged: %v", staged)
	}
	if bytes, shards := s.shards.Usage(); bytes != 0 || shards != 0 {
		t.Fatalf("the shard store holds %d bytes, %d shards after refusals only; want none", bytes, shards)
	}
}
