package codec

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

var schemes = [][2]int{{1, 0}, {1, 1}, {2, 1}, {3, 2}, {4, 2}}

func mustNew(t testing.TB, k, m int) *Codec {
	t.Helper()
	c, err := New(k, m)
	if err != nil {
		t.Fatalf("New(%d, %d): %v", k, m, err)
	}
	return c
}

// randomBlock is n reproducible pseudo-random bytes.
func randomBlock(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// encode encodes block with c and returns copies of its shards and sums, so
// the Block can be released at once.
func encode(t testing.TB, c *Codec, block []byte) ([][]byte, []uint32) {
	t.Helper()
	b := c.NewBlock(len(block))
	defer b.Release()
	copy(b.Data(), block)
	if err := c.Encode(b, len(block)); err != nil {
		t.Fatalf("Encode %s, %d bytes: %v", c, len(block), err)
	}
	shards := make([][]byte, len(b.Shards()))
	for i, s := range b.Shards() {
		shards[i] = bytes.Clone(s)
		if shards[i] == nil {
			shards[i] = []byte{}
		}
	}
	return shards, append([]uint32(nil), b.Sums()...)
}

func TestNewRejectsBadSchemes(t *testing.T) {
	for _, tc := range []struct {
		k, m int
		want string
	}{
		{0, 1, "k = 0"},
		{-3, 1, "k = -3"},
		{2, -1, "m = -1"},
		{200, 57, "k+m = 200+57"},
		{257, 0, "k+m = 257+0"},
	} {
		_, err := New(tc.k, tc.m)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%d, %d) = %v, want an error containing %q", tc.k, tc.m, err, tc.want)
		}
	}
	for _, km := range [][2]int{{1, 0}, {256, 0}, {10, 4}, {4, 2}} {
		c := mustNew(t, km[0], km[1])
		if c.K() != km[0] || c.M() != km[1] {
			t.Errorf("New(%d, %d) has K %d M %d", km[0], km[1], c.K(), c.M())
		}
	}
}

func TestShardLen(t *testing.T) {
	for _, tc := range []struct{ blockLen, k, want int }{
		{0, 4, 0}, {1, 4, 1}, {3, 4, 1}, {4, 4, 1}, {5, 4, 2},
		{1 << 20, 4, 1 << 18}, {1 << 20, 3, 349526}, {7, 1, 7},
		{-1, 4, 0}, {10, 0, 0},
	} {
		if got := ShardLen(tc.blockLen, tc.k); got != tc.want {
			t.Errorf("ShardLen(%d, %d) = %d, want %d", tc.blockLen, tc.k, got, tc.want)
		}
	}
}

func blockLens(k int) []int {
	return []int{0, 1, k - 1, k, k + 1, 64<<10 - 1, 64 << 10, 64<<10 + 1, 1 << 20}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, km := range schemes {
		c := mustNew(t, km[0], km[1])
		for _, n := range blockLens(c.K()) {
			t.Run(fmt.Sprintf("%s/%d", c, n), func(t *testing.T) {
				block := randomBlock(uint64(n), n)
				shards, sums := encode(t, c, block)
				sl := ShardLen(n, c.K())
				if len(shards) != c.K()+c.M() {
					t.Fatalf("%d shards, want %d", len(shards), c.K()+c.M())
				}
				for i, s := range shards {
					if len(s) != sl {
						t.Fatalf("shard %d is %d bytes, want %d", i, len(s), sl)
					}
					if sums[i] != Checksum(s) {
						t.Fatalf("sum %d = %08x, Checksum = %08x", i, sums[i], Checksum(s))
					}
				}
				// The data shards are the block followed by zeros.
				data := bytes.Join(shards[:c.K()], nil)
				if !bytes.Equal(data[:n], block) || bytes.ContainsFunc(data[n:], func(r rune) bool { return r != 0 }) {
					t.Fatal("data shards are not the block plus zero padding")
				}
				dst := make([]byte, n)
				reconstructed, err := c.Decode(shards, n, dst)
				if err != nil || reconstructed {
					t.Fatalf("Decode with every shard = %v, %v; want false, nil", reconstructed, err)
				}
				if !bytes.Equal(dst, block) {
					t.Fatal("Decode returned other bytes")
				}
			})
		}
	}
}

// subsets calls fn with every subset of [0, n) of size size.
func subsets(n, size int, fn func([]int)) {
	var rec func(start int, cur []int)
	rec = func(start int, cur []int) {
		if len(cur) == size {
			fn(cur)
			return
		}
		for i := start; i < n; i++ {
			rec(i+1, append(cur, i))
		}
	}
	rec(0, nil)
}

func without(shards [][]byte, lost []int) [][]byte {
	out := append([][]byte(nil), shards...)
	for _, i := range lost {
		out[i] = nil
	}
	return out
}

func TestDecodeWithLostShards(t *testing.T) {
	for _, km := range schemes {
		c := mustNew(t, km[0], km[1])
		k, total := c.K(), c.K()+c.M()
		for _, n := range []int{1, k + 1, 5, 64<<10 + 1, 1 << 20} {
			block := randomBlock(uint64(n)+7, n)
			shards, _ := encode(t, c, block)
			needed := ShardLen(n, ShardLen(n, k))
			for lost := 0; lost <= c.M()+1; lost++ {
				subsets(total, lost, func(idx []int) {
					name := fmt.Sprintf("%s/%d bytes/lost %v", c, n, idx)
					in := without(shards, idx)
					dataLost := false
					for _, i := range idx {
						dataLost = dataLost || i < needed
					}
					// Exact capacity (the straddling shard goes through
					// scratch) and room for the padding (all in place).
					for _, room := range []int{n, k * ShardLen(n, k)} {
						dst := make([]byte, room)
						reconstructed, err := c.Decode(in, n, dst)
						if lost > c.M() {
							if !errors.Is(err, ErrTooFewShards) {
								t.Fatalf("%s: Decode = %v, want ErrTooFewShards", name, err)
							}
							continue
						}
						if err != nil {
							t.Fatalf("%s: Decode: %v", name, err)
						}
						if reconstructed != dataLost {
							t.Fatalf("%s: reconstructed = %v, want %v", name, reconstructed, dataLost)
						}
						if !bytes.Equal(dst[:n], block) {
							t.Fatalf("%s: Decode returned other bytes", name)
						}
					}
					for i := range in {
						if (in[i] == nil) != (shards[i] == nil || contains(idx, i)) {
							t.Fatalf("%s: Decode changed shards[%d]", name, i)
						}
					}
				})
			}
		}
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestDecodeShardAlreadyInPlace(t *testing.T) {
	c := mustNew(t, 4, 2)
	n := 1000
	block := randomBlock(1, n)
	shards, _ := encode(t, c, block)
	sl := ShardLen(n, 4)
	dst := make([]byte, 4*sl)
	// The caller read data shards 0 and 2 straight into their place.
	copy(dst[0:], shards[0])
	copy(dst[2*sl:], shards[2])
	in := [][]byte{dst[0:sl], nil, dst[2*sl : 3*sl], shards[3], shards[4], shards[5]}
	reconstructed, err := c.Decode(in, n, dst)
	if err != nil || !reconstructed {
		t.Fatalf("Decode = %v, %v; want true, nil", reconstructed, err)
	}
	if !bytes.Equal(dst[:n], block) {
		t.Fatal("Decode returned other bytes")
	}
}

func TestDecodeRejectsBadInput(t *testing.T) {
	c := mustNew(t, 3, 2)
	n := 3000
	shards, _ := encode(t, c, randomBlock(2, n))
	short := without(shards, nil)
	short[2] = short[2][:len(short[2])-1]
	empty := without(shards, nil)
	empty[4] = []byte{}
	for _, tc := range []struct {
		name     string
		shards   [][]byte
		blockLen int
		dst      []byte
		want     string
		is       error
	}{
		{"short shard", short, n, make([]byte, n), "shard 2 is 999 bytes, want 1000", ErrShardSize},
		{"empty shard", empty, n, make([]byte, n), "shard 4 is 0 bytes", ErrShardSize},
		{"wrong block length", shards, n + 3, make([]byte, n+3), "shard 0 is 1000 bytes, want 1001", ErrShardSize},
		{"too few slices", shards[:4], n, make([]byte, n), "4 shards given", nil},
		{"too many slices", append(without(shards, nil), nil), n, make([]byte, n), "6 shards given", nil},
		{"small dst", shards, n, make([]byte, n-1), "destination holds 2999 bytes", nil},
		{"negative length", shards, -1, nil, "negative", nil},
		{"nothing", make([][]byte, 5), n, make([]byte, n), "0 of 5 shards present", ErrTooFewShards},
	} {
		_, err := c.Decode(tc.shards, tc.blockLen, tc.dst)
		if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Errorf("%s: Decode = %v, want an error containing %q (is %v)", tc.name, err, tc.want, tc.is)
		}
	}
}

func TestReconstructRebuildsLostShards(t *testing.T) {
	for _, km := range schemes {
		c := mustNew(t, km[0], km[1])
		total := c.K() + c.M()
		for _, n := range []int{0, 1, 5, 64<<10 + 1} {
			block := randomBlock(uint64(n)+11, n)
			shards, _ := encode(t, c, block)
			sl := ShardLen(n, c.K())
			for lost := 1; lost <= c.M()+1; lost++ {
				subsets(total, lost, func(idx []int) {
					name := fmt.Sprintf("%s/%d bytes/lost %v", c, n, idx)
					in := without(shards, idx)
					// The first lost shard is rebuilt into the caller's buffer.
					own := make([]byte, 0, sl+10)
					in[idx[0]] = own
					err := c.Reconstruct(in, n, idx)
					if lost > c.M() {
						if !errors.Is(err, ErrTooFewShards) {
							t.Fatalf("%s: Reconstruct = %v, want ErrTooFewShards", name, err)
						}
						return
					}
					if err != nil {
						t.Fatalf("%s: Reconstruct: %v", name, err)
					}
					for i := range in {
						if !bytes.Equal(in[i], shards[i]) || in[i] == nil {
							t.Fatalf("%s: shard %d differs after Reconstruct", name, i)
						}
					}
					if sl > 0 && &in[idx[0]][:1][0] != &own[:1][0] {
						t.Fatalf("%s: shard %d not rebuilt in the buffer given", name, idx[0])
					}
				})
			}
		}
	}
}

func TestReconstructIgnoresWantedContent(t *testing.T) {
	c := mustNew(t, 4, 2)
	n := 4096
	shards, _ := encode(t, c, randomBlock(3, n))
	in := without(shards, nil)
	in[1] = bytes.Repeat([]byte{0xff}, ShardLen(n, 4)) // a corrupt shard to rewrite
	in[5] = []byte{1, 2, 3}                            // wrong length, but wanted
	if err := c.Reconstruct(in, n, []int{1, 5}); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 5} {
		if !bytes.Equal(in[i], shards[i]) {
			t.Errorf("shard %d not rebuilt", i)
		}
	}
	if err := c.Reconstruct(in, n, nil); err != nil {
		t.Errorf("Reconstruct with nothing wanted: %v", err)
	}
	for _, want := range [][]int{{6}, {-1}} {
		if err := c.Reconstruct(in, n, want); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("Reconstruct(want %v) = %v, want out of range", want, err)
		}
	}
}

func TestBlockLifecycle(t *testing.T) {
	c := mustNew(t, 2, 1)
	other := mustNew(t, 4, 2)
	b := c.NewBlock(100)
	if len(b.Data()) != 100 {
		t.Fatalf("Data is %d bytes, want 100", len(b.Data()))
	}
	if b.Shards() != nil || b.Sums() != nil {
		t.Fatal("Shards/Sums before Encode are not nil")
	}
	if err := c.Encode(b, 101); err == nil {
		t.Error("Encode past the block's capacity succeeded")
	}
	if err := other.Encode(b, 10); err == nil {
		t.Error("Encode with a 4+2 codec of a 2+1 block succeeded")
	}
	if err := c.Encode(b, 100); err != nil {
		t.Fatal(err)
	}
	// Encoding again with a shorter block re-slices the shards.
	if err := c.Encode(b, 7); err != nil {
		t.Fatal(err)
	}
	if got := len(b.Shards()[2]); got != 4 {
		t.Errorf("shard length after re-encode %d, want 4", got)
	}
	b.Release()
	b.Release()
	if b.Data() != nil || b.Shards() != nil || b.Sums() != nil {
		t.Error("Block gives out memory after Release")
	}
	if err := c.Encode(b, 1); err == nil {
		t.Error("Encode of a released block succeeded")
	}
	if err := c.Encode(nil, 1); err == nil {
		t.Error("Encode of nil succeeded")
	}
	if got := len(c.NewBlock(-5).Data()); got != 0 {
		t.Errorf("NewBlock(-5) has %d bytes", got)
	}
}

// A pooled buffer comes back dirty: Encode must zero the padding itself.
func TestEncodeZeroesReusedPadding(t *testing.T) {
	c := mustNew(t, 4, 2)
	for range 3 {
		b := c.NewBlock(64 << 10)
		d := b.Data()
		for i := range d {
			d[i] = 0xa5
		}
		b.Release()
	}
	block := randomBlock(9, 5)
	want, _ := encode(t, c, block)
	b := c.NewBlock(64 << 10)
	defer b.Release()
	copy(b.Data(), block)
	if err := c.Encode(b, len(block)); err != nil {
		t.Fatal(err)
	}
	for i, s := range b.Shards() {
		if !bytes.Equal(s, want[i]) {
			t.Fatalf("shard %d of a reused buffer = %x, want %x", i, s, want[i])
		}
	}
}

// Encode allocates nothing of its own: as often as reedsolomon's Encode on
// the same shards (once on AVX2, for a []byte put in its sync.Pool) and
// never without parity.
func TestEncodeAllocatesNoMoreThanReedSolomon(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, km := range [][2]int{{4, 0}, {4, 2}, {2, 1}} {
		c := mustNew(t, km[0], km[1])
		b := c.NewBlock(1 << 20)
		defer b.Release()
		ours := testing.AllocsPerRun(20, func() {
			if err := c.Encode(b, 1<<20); err != nil {
				t.Fatal(err)
			}
		})
		var direct float64
		if c.enc != nil {
			direct = testing.AllocsPerRun(20, func() {
				if err := c.enc.Encode(b.Shards()); err != nil {
					t.Fatal(err)
				}
			})
		}
		if ours > direct {
			t.Errorf("Encode %s: %.1f allocs, reedsolomon alone %.1f", c, ours, direct)
		}
		t.Logf("Encode %s: %.1f allocs per block (reedsolomon alone %.1f)", c, ours, direct)
	}
}

// A shard lent out (to gRPC, which writes it after Send returns) keeps its
// bytes after the Block is released, however often the pool hands out
// buffers meanwhile; once the loan is returned the buffer is reused.
func TestLentShardsOutliveRelease(t *testing.T) {
	c := mustNew(t, 2, 1)
	block := randomBlock(64<<10, 3)
	b := c.NewBlock(len(block))
	copy(b.Data(), block)
	if err := c.Encode(b, len(block)); err != nil {
		t.Fatal(err)
	}
	shard := b.Shards()[0]
	want := bytes.Clone(shard)
	release := b.Lend()
	b.Release()
	if b.Data() != nil || b.Shards() != nil {
		t.Fatal("the owner still sees the Block after Release")
	}
	for range 50 {
		o := c.NewBlock(len(block))
		for i := range o.Data() {
			o.Data()[i] = 0xff
		}
		o.Release()
	}
	if !bytes.Equal(shard, want) {
		t.Fatal("a lent shard was overwritten by a Block made after its Release")
	}
	release()
	release() // a second call does nothing
	if raceEnabled {
		return // sync.Pool drops buffers at random under the race detector
	}
	reused := false
	var held []*Block
	for range 10 {
		o := c.NewBlock(len(block))
		reused = reused || &o.Data()[0] == &shard[0]
		held = append(held, o)
	}
	for _, o := range held {
		o.Release()
	}
	if !reused {
		t.Error("the buffer of a released Block never came back from the pool once its loan was returned")
	}
	if r := b.Lend(); r == nil {
		t.Error("Lend of a released Block returned nil")
	} else {
		r()
	}
}

// ChecksumPieces of a shard split anywhere, empty pieces included, is the
// shard's Checksum.
func TestChecksumPiecesIsTheChecksumOfTheWhole(t *testing.T) {
	b := make([]byte, 50_000)
	for i := range b {
		b[i] = byte(i * 7)
	}
	want := Checksum(b)
	for _, cuts := range [][]int{{}, {0}, {1}, {16384, 32768}, {3, 3, 49_999}} {
		var pieces [][]byte
		last := 0
		for _, c := range cuts {
			pieces = append(pieces, b[last:c])
			last = c
		}
		pieces = append(pieces, b[last:])
		if got := ChecksumPieces(pieces); got != want {
			t.Fatalf("ChecksumPieces cut at %v = %08x, want %08x", cuts, got, want)
		}
	}
	if ChecksumPieces(nil) != Checksum(nil) {
		t.Fatal("ChecksumPieces of no pieces is not the checksum of no bytes")
	}
}
