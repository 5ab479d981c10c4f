package shardstore

import (
	"testing"
)

const benchShardLen = 256 << 10

// BenchmarkPut stores a 256 KiB shard durably (in place in its part file,
// fsync), overwriting the same few ids.
func BenchmarkPut(b *testing.B) {
	s := open(b, b.TempDir(), Options{})
	h, payload := shardOf(ID{blobA, 0, 0}, 4, 2, 4*benchShardLen, 4*benchShardLen, 1)
	b.SetBytes(benchShardLen)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		h.ID.Block = uint32(i % 16)
		i++
		if err := s.Put(h, payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStageCommit stages 64 shards of 256 KiB of one index and
// commits them: one part file, one fsync, one rename.
func BenchmarkStageCommit(b *testing.B) {
	s := open(b, b.TempDir(), Options{})
	h, payload := shardOf(ID{blobA, 0, 0}, 4, 2, 4*benchShardLen, 4*benchShardLen, 1)
	b.SetBytes(64 * benchShardLen)
	b.ReportAllocs()
	for b.Loop() {
		for blk := range uint32(64) {
			h.ID.Block = blk
			if err := s.Stage(h, payload); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := s.CommitStaged(blobA); err != nil {
			b.Fatal(err)
		}
		if _, err := s.DeleteBlob(blobA); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGet reads and checks a 256 KiB shard into a reused buffer.
func BenchmarkGet(b *testing.B) {
	s := open(b, b.TempDir(), Options{})
	id := ID{blobA, 0, 0}
	h, payload := shardOf(id, 4, 2, 4*benchShardLen, 4*benchShardLen, 1)
	if err := s.Put(h, payload); err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, benchShardLen)
	b.SetBytes(benchShardLen)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.Get(id, dst); err != nil {
			b.Fatal(err)
		}
	}
}
