package storage

import (
	"bytes"
	"context"
	"runtime"
	"testing"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// allocatedBytes is the heap memory fn allocates.
func allocatedBytes(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A coordinator's get holds a few blocks at a time in pooled buffers and
// reads the shards it holds itself straight into them: reading a blob of
// N blocks allocates about the same whatever N, far less than a block per
// block.
func TestGetAllocatesBuffersPerGetNotPerBlock(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops buffers at random under the race detector")
	}
	const blockSize = 64 << 10
	s, _ := newTestStore(t, Config{BlockSize: blockSize, InlineMax: 1024}, "n1", "n1")
	ctx := context.Background()
	data := bytes.Repeat([]byte("zrpc blob bytes "), 64*blockSize/16)
	if _, err := s.Put(ctx, &pb.BlobPutHeader{Name: "a"}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	read := func(blocks int) uint64 {
		var got int
		send := func(r *pb.BlobGetResponse) error { got += len(r.Chunk); return nil }
		req := &pb.BlobGetRequest{Name: "a", Length: uint64(blocks * blockSize)}
		n := allocatedBytes(func() {
			if err := s.Get(ctx, req, send); err != nil {
				t.Fatal(err)
			}
		})
		if got != blocks*blockSize {
			t.Fatalf("get of %d blocks sent %d bytes", blocks, got)
		}
		return n
	}
	read(64) // fill the pools
	few, many := read(8), read(64)
	t.Logf("get of 8 blocks allocated %d bytes, of 64 blocks %d bytes (block %d bytes)", few, many, blockSize)
	if many > few+8*blockSize {
		t.Errorf("a get of 64 blocks allocated %d bytes, one of 8 blocks %d: grows with the blocks read (%d bytes a block)",
			many, few, (many-few)/56)
	}
}
