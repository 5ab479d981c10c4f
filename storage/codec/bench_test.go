package codec

import (
	"testing"
)

const benchBlockLen = 1 << 20

var benchSchemes = [][2]int{{4, 2}, {2, 1}}

// BenchmarkEncode encodes a 1 MiB block. zrpc is Codec.Encode (padding,
// parity, CRC32C of every shard); reedsolomon is the same encoder's Encode
// alone on the same buffers; reedsolomon+crc32c adds hash/crc32 of every
// shard, the least work Encode is asked to do.
func BenchmarkEncode(b *testing.B) {
	for _, km := range benchSchemes {
		c := mustNew(b, km[0], km[1])
		blk := c.NewBlock(benchBlockLen)
		copy(blk.Data(), randomBlock(1, benchBlockLen))
		if err := c.Encode(blk, benchBlockLen); err != nil {
			b.Fatal(err)
		}
		shards := blk.Shards()
		b.Run(c.String()+"/zrpc", func(b *testing.B) {
			b.SetBytes(benchBlockLen)
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Encode(blk, benchBlockLen); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.String()+"/reedsolomon", func(b *testing.B) {
			b.SetBytes(benchBlockLen)
			b.ReportAllocs()
			for b.Loop() {
				if err := c.enc.Encode(shards); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.String()+"/reedsolomon+crc32c", func(b *testing.B) {
			sums := make([]uint32, len(shards))
			b.SetBytes(benchBlockLen)
			b.ReportAllocs()
			for b.Loop() {
				if err := c.enc.Encode(shards); err != nil {
					b.Fatal(err)
				}
				for i, s := range shards {
					sums[i] = Checksum(s)
				}
			}
		})
		blk.Release()
	}
}

// BenchmarkDecode decodes a 1 MiB block with data shard 1 missing. zrpc is
// Codec.Decode from shards in their own buffers into a contiguous block
// (rebuilds shard 1, copies the others); zrpc-inplace has the present data
// shards already at their place in dst, as when they are read straight
// into it; reedsolomon is the same encoder's ReconstructData alone on the
// same shards, rebuilding into a reused buffer.
func BenchmarkDecode(b *testing.B) {
	for _, km := range benchSchemes {
		c := mustNew(b, km[0], km[1])
		shards, _ := encode(b, c, randomBlock(2, benchBlockLen))
		in := without(shards, []int{1})
		b.Run(c.String()+"/zrpc", func(b *testing.B) {
			dst := make([]byte, benchBlockLen)
			b.SetBytes(benchBlockLen)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Decode(in, benchBlockLen, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.String()+"/zrpc-inplace", func(b *testing.B) {
			sl := ShardLen(benchBlockLen, c.K())
			dst := make([]byte, benchBlockLen, c.K()*sl)
			inPlace := without(in, nil)
			for i := range c.K() {
				if in[i] != nil {
					inPlace[i] = dst[i*sl : (i+1)*sl]
					copy(inPlace[i], in[i])
				}
			}
			b.SetBytes(benchBlockLen)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Decode(inPlace, benchBlockLen, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.String()+"/reedsolomon", func(b *testing.B) {
			work := make([][]byte, len(in))
			rebuilt := make([]byte, 0, len(shards[1]))
			b.SetBytes(benchBlockLen)
			b.ReportAllocs()
			for b.Loop() {
				copy(work, in)
				work[1] = rebuilt[:0]
				if err := c.enc.ReconstructData(work); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
