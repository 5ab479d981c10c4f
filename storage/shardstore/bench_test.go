package shardstore

import (
	"testing"
)

const benchShardLen = 256 << 10

// BenchmarkPut stores a 256 KiB shard (temporary file, fsync, rename,
// directory fsync), overwriting the same few ids.
func BenchmarkPut(b *testing.B) {
	s := open(b, b.TempDir(), Options{})
	h, payload := shard(ID{blobA, 0, 0}, 4, 2, 4*benchShardLen, 1)
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

// BenchmarkGet reads and checks a 256 KiB shard into a reused buffer.
func BenchmarkGet(b *testing.B) {
	s := open(b, b.TempDir(), Options{})
	id := ID{blobA, 0, 0}
	put(b, s, id, 4*benchShardLen, 1)
	dst := make([]byte, benchShardLen)
	b.SetBytes(benchShardLen)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.Get(id, dst); err != nil {
			b.Fatal(err)
		}
	}
}
