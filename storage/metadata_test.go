package storage

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// TestMetadataBoundCoversEncodedCommit: the bound a put checks is never
// below the size of the BlobCommit entry it would propose, whatever the
// scheme and however many agents the blocks name.
func TestMetadataBoundCoversEncodedCommit(t *testing.T) {
	const blockSize, blocks = 4096, 40
	for _, n := range []int{1, 2, 3, 6, 20, 256} {
		b := &pb.Blob{Name: strings.Repeat("n", MaxNameLen), Id: strings.Repeat("f", 32), Size: blocks * blockSize,
			DataShards: uint32(max(1, n-2)), ParityShards: uint32(min(n-1, 2)), BlockSize: blockSize, Sha256: bytes.Repeat([]byte{1}, 32)}
		for range blocks {
			blk := &pb.BlobBlock{Len: blockSize}
			for i := range n {
				// Holder refs past 127 take two bytes; checksums all four.
				blk.Holders = append(blk.Holders, b.HolderRef(strings.Repeat("a", 60)+string(rune('A'+i%60))+string(rune('A'+i/60))))
				blk.Sums = append(blk.Sums, 0xffffffff)
			}
			b.Blocks = append(b.Blocks, blk)
		}
		cmd := &pb.Command{RequestId: strings.Repeat("r", 36), Kind: &pb.Command_BlobCommit{BlobCommit: &pb.BlobCommit{Blob: b, Overwrite: true}}}
		if got, bound := uint64(proto.Size(cmd)), metadataBytes(b.Size, blockSize, n); got > bound {
			t.Errorf("%d shards per block: the commit entry is %d bytes, the bound says at most %d", n, got, bound)
		}
	}
}

// TestPutRefusesMetadataLargerThanOneEntry: a put whose metadata cannot be
// carried by one Raft entry is refused with InvalidArgument naming the
// limit: from its declared size before a byte is read, and, for a stream
// of unknown size, as soon as it outgrows the limit, leaving nothing
// behind.
func TestPutRefusesMetadataLargerThanOneEntry(t *testing.T) {
	ctx := context.Background()
	s, fc := newTestStore(t, Config{BlockSize: 4096, MaxBlobSize: 64 << 30}, "n1", "n1")
	_, err := s.Put(ctx, &pb.BlobPutHeader{Name: "huge", Size: 64 << 30}, noRead{t})
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "the limit is 8 MiB") || !strings.Contains(err.Error(), "block size") {
		t.Fatalf("put of 64 GiB in 4096-byte blocks: %v; want InvalidArgument naming the 8 MiB limit and the block size", err)
	}
	if len(fc.fsm.PendingBlobs()) != 0 {
		t.Fatal("a refused put left a pending entry")
	}

	// A 40 KiB limit leaves 8 KiB for blocks: 372 blocks of 1 shard.
	s, fc = newTestStore(t, Config{BlockSize: 4096, InlineMax: 1024, MaxMetadataBytes: 40 << 10}, "n1", "n1")
	if _, err := s.Put(ctx, &pb.BlobPutHeader{Name: "fits"}, bytes.NewReader(make([]byte, 300*4096))); err != nil {
		t.Fatalf("put of 300 blocks under the limit: %v", err)
	}
	_, err = s.Put(ctx, &pb.BlobPutHeader{Name: "grows"}, bytes.NewReader(make([]byte, 400*4096)))
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "the limit is 40 KiB") {
		t.Fatalf("stream of 400 blocks: %v; want InvalidArgument naming the 40 KiB limit", err)
	}
	if fc.fsm.Blob("grows") != nil || len(fc.fsm.PendingBlobs()) != 0 {
		t.Fatal("a refused stream left a blob or a pending put")
	}
}
