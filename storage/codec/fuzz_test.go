package codec

import (
	"bytes"
	"errors"
	"math/bits"
	"testing"
)

// FuzzRoundTrip encodes an arbitrary block with a scheme from k 1-8 and
// m 0-3, loses the shards in lost, and checks that Decode and Reconstruct
// never panic, give back the block when at most m shards are lost and
// ErrTooFewShards otherwise. A set bit 0 of mangle cuts one present shard
// short, which must be ErrShardSize; bits 1-7 add room to dst.
//
//	go test -run '^$' -fuzz FuzzRoundTrip ./storage/codec/
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{}, uint8(0), uint64(0), uint8(0))
	f.Add([]byte("a"), uint8(9), uint64(1), uint8(0))
	f.Add([]byte("hello, shards"), uint8(3+8*2), uint64(0b101), uint8(6))
	f.Add(bytes.Repeat([]byte{0xfe, 0x01}, 700), uint8(2+8), uint64(0b10), uint8(1))
	f.Add(bytes.Repeat([]byte("zrpc"), 3000), uint8(5+8*3), uint64(0b1110), uint8(255))
	f.Fuzz(func(t *testing.T, block []byte, scheme uint8, lost uint64, mangle uint8) {
		c := mustNew(t, 1+int(scheme%8), int(scheme/8)%4)
		total := c.K() + c.M()
		lost &= 1<<total - 1
		shards, _ := encode(t, c, block)
		in := make([][]byte, total)
		for i := range in {
			if lost&(1<<i) == 0 {
				in[i] = shards[i]
			}
		}
		n := len(block)
		if mangle&1 != 0 && n > 0 {
			for i := range in {
				if in[i] != nil {
					in[i] = in[i][:len(in[i])-1]
					if _, err := c.Decode(in, n, make([]byte, n)); !errors.Is(err, ErrShardSize) {
						t.Fatalf("Decode with shard %d cut short = %v, want ErrShardSize", i, err)
					}
					return
				}
			}
		}
		tooFew := bits.OnesCount64(lost) > c.M()
		dst := make([]byte, n+int(mangle>>1))
		_, err := c.Decode(in, n, dst)
		switch {
		case tooFew && !errors.Is(err, ErrTooFewShards):
			t.Fatalf("%s lost %b: Decode = %v, want ErrTooFewShards", c, lost, err)
		case !tooFew && err != nil:
			t.Fatalf("%s lost %b: Decode: %v", c, lost, err)
		case !tooFew && !bytes.Equal(dst[:n], block):
			t.Fatalf("%s lost %b: Decode returned other bytes", c, lost)
		}
		var want []int
		for i := range total {
			if lost&(1<<i) != 0 {
				want = append(want, i)
			}
		}
		err = c.Reconstruct(in, n, want)
		switch {
		case tooFew && !errors.Is(err, ErrTooFewShards):
			t.Fatalf("%s lost %b: Reconstruct = %v, want ErrTooFewShards", c, lost, err)
		case !tooFew && err != nil:
			t.Fatalf("%s lost %b: Reconstruct: %v", c, lost, err)
		}
		for i := range total {
			if !tooFew && !bytes.Equal(in[i], shards[i]) {
				t.Fatalf("%s lost %b: shard %d differs after Reconstruct", c, lost, i)
			}
		}
	})
}
