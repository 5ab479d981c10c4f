package codec

import (
	"bytes"
	"errors"
	"math/bits"
	"testing"
)

// FuzzDecodeCorrupt corrupts shards of an encoded block in place (a bit
// flipped at a fuzzed offset) and cuts or pads others, then reads the block
// as a get does: shards whose CRC32C does not match the block's sums are
// dropped before Decode. Nothing panics; with at most m shards dropped the
// block comes back byte-exact, else the error is ErrTooFewShards; and a
// shard of the wrong length is ErrShardSize, never other bytes.
//
//	go test -run '^$' -fuzz FuzzDecodeCorrupt ./storage/codec/
func FuzzDecodeCorrupt(f *testing.F) {
	f.Add([]byte("hello, shards"), uint8(2+8), uint16(0b1), uint16(3), uint8(0))
	f.Add(bytes.Repeat([]byte("zrpc"), 3000), uint8(4+8*2), uint16(0b101), uint16(977), uint8(0))
	f.Add(bytes.Repeat([]byte{0xff}, 1000), uint8(3+8*3), uint16(0b111), uint16(0), uint8(2))
	f.Add([]byte{1}, uint8(1), uint16(0), uint16(0), uint8(1))
	f.Fuzz(func(t *testing.T, block []byte, scheme uint8, flip uint16, at uint16, resize uint8) {
		c := mustNew(t, 1+int(scheme%8), int(scheme/8)%4)
		total := c.K() + c.M()
		flip &= 1<<total - 1
		shards, sums := encode(t, c, block)
		in := make([][]byte, total)
		for i := range in {
			in[i] = bytes.Clone(shards[i])
			if flip&(1<<i) != 0 && len(in[i]) > 0 {
				in[i][int(at)%len(in[i])] ^= 1 << (int(at) % 8)
			}
		}
		n := len(block)
		if resize != 0 && total > 0 {
			i := int(resize) % total
			switch {
			case resize&1 != 0:
				in[i] = append(in[i], 0)
			case len(in[i]) > 0:
				in[i] = in[i][:len(in[i])-1]
			default:
				return // an empty shard cannot be cut: nothing is wrong with it
			}
			if _, err := c.Decode(in, n, make([]byte, n)); !errors.Is(err, ErrShardSize) {
				t.Fatalf("%s: Decode with shard %d of %d bytes (want %d) = %v, want ErrShardSize", c, i, len(in[i]), len(shards[i]), err)
			}
			return
		}
		dropped := 0
		for i := range in {
			if Checksum(in[i]) != sums[i] {
				in[i] = nil
				dropped++
			}
		}
		if dropped != bits.OnesCount16(flip) && n > 0 {
			t.Fatalf("%s: %d shards flipped but %d fail their checksum", c, bits.OnesCount16(flip), dropped)
		}
		dst := make([]byte, n)
		_, err := c.Decode(in, n, dst)
		switch {
		case dropped > c.M() && !errors.Is(err, ErrTooFewShards):
			t.Fatalf("%s: %d shards dropped: Decode = %v, want ErrTooFewShards", c, dropped, err)
		case dropped <= c.M() && err != nil:
			t.Fatalf("%s: %d shards dropped: Decode: %v", c, dropped, err)
		case dropped <= c.M() && !bytes.Equal(dst, block):
			t.Fatalf("%s: %d shards dropped: Decode returned other bytes", c, dropped)
		}
	})
}
