// Package codec turns one block of a blob into k data and m parity shards
// with Reed-Solomon erasure coding (klauspost/reedsolomon, SIMD), and turns
// any k of those shards back into the block. Each shard gets a CRC32C
// (Castagnoli) checksum when it is encoded.
//
// Buffers come from pools: a Block holds a block's bytes and its parity in
// one contiguous buffer, laid out so that the block's bytes are the data
// shards without a copy, and goes back to the pool on Release.
//
// The package is pure computation on memory. It is not a storage format
// (storage/shardstore writes shards to disk), it does not choose k and m
// (storage/placement.DefaultScheme does), and Decode does not check
// checksums: the caller compares Checksum of each shard it read with the
// checksum stored beside it and passes nil for a shard that fails.
package codec

import (
	"errors"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/klauspost/reedsolomon"

	"github.com/zrpcio/zrpc/internal/bufpool"
)

// MaxShards is the largest k+m a Codec accepts (GF(2^8) Reed-Solomon).
const MaxShards = 256

// ErrTooFewShards is returned (wrapped) by Decode and Reconstruct when fewer
// than k shards are present.
var ErrTooFewShards = errors.New("too few shards")

// ErrShardSize is returned (wrapped, with the shard index) when a shard
// given to Decode or Reconstruct is not ShardLen(blockLen, k) bytes long.
var ErrShardSize = errors.New("wrong shard size")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum is the CRC32C (Castagnoli) of b, the checksum stored with every
// shard. It uses the CPU's CRC32 instruction where there is one.
func Checksum(b []byte) uint32 {
	return crc32.Checksum(b, castagnoli)
}

// PiecesLen is the number of bytes in pieces: a payload received in
// several buffers (the HTTP/2 frames it arrived in).
func PiecesLen(pieces [][]byte) int {
	n := 0
	for _, p := range pieces {
		n += len(p)
	}
	return n
}

// ChecksumPieces is Checksum of the bytes of pieces, in order.
func ChecksumPieces(pieces [][]byte) uint32 {
	var sum uint32
	for _, p := range pieces {
		sum = crc32.Update(sum, castagnoli, p)
	}
	return sum
}

// ShardLen is the length in bytes of every shard (data and parity) of a
// block of blockLen bytes split into k data shards: ceil(blockLen/k), and 0
// for an empty block or k < 1. The last data shards are zero-padded.
//
// The length is not rounded up to a multiple of 64 for SIMD. reedsolomon
// runs its vector code on the largest multiple of its vector size and
// finishes the few tail bytes in Go, which costs nothing measurable on
// 1 MiB blocks (k = 2 and 4 give multiples of 64 anyway), whereas rounding
// would store up to 63 zero bytes per shard and make every small block's
// shards bigger than the block.
func ShardLen(blockLen, k int) int {
	if blockLen <= 0 || k <= 0 {
		return 0
	}
	n := blockLen / k
	if blockLen%k != 0 {
		n++
	}
	return n
}

// Codec encodes and decodes blocks for one k+m scheme. It is safe for
// concurrent use; create one per scheme and share it.
type Codec struct {
	k, m int
	enc  reedsolomon.Encoder // single-threaded; nil when m == 0
	work sync.Pool           // *shardWork
}

// shardWork is the scratch of one call: a list of shards, and which of
// them to rebuild.
type shardWork struct {
	shards   [][]byte
	required []bool
}

// New returns a Codec with k data and m parity shards:
// 1 <= k, 0 <= m, k+m <= MaxShards. With m == 0 shards are the block split
// in k pieces and nothing can be rebuilt.
func New(k, m int) (*Codec, error) {
	switch {
	case k < 1:
		return nil, fmt.Errorf("codec: k = %d, want at least 1", k)
	case m < 0:
		return nil, fmt.Errorf("codec: m = %d, want at least 0", m)
	case k+m > MaxShards:
		return nil, fmt.Errorf("codec: k+m = %d+%d, want at most %d", k, m, MaxShards)
	}
	c := &Codec{k: k, m: m}
	if m > 0 {
		enc, err := reedsolomon.New(k, m, reedsolomon.WithMaxGoroutines(1))
		if err != nil {
			return nil, fmt.Errorf("codec: reedsolomon %d+%d: %w", k, m, err)
		}
		c.enc = enc
	}
	c.work.New = func() any {
		return &shardWork{
			shards:   make([][]byte, k+m),
			required: make([]bool, k+m),
		}
	}
	return c, nil
}

// K is the number of data shards.
func (c *Codec) K() int { return c.k }

// M is the number of parity shards.
func (c *Codec) M() int { return c.m }

// String is "k+m".
func (c *Codec) String() string { return fmt.Sprintf("%d+%d", c.k, c.m) }

func (c *Codec) getWork() *shardWork { return c.work.Get().(*shardWork) }

func (c *Codec) putWork(w *shardWork) {
	clear(w.shards) // drop references to caller memory
	clear(w.required)
	c.work.Put(w)
}

// checkShards verifies that shards has k+m entries and that every non-nil
// one is sl bytes long, and counts the present ones. Shards marked in skip
// (when not nil) count as missing whatever they hold.
func (c *Codec) checkShards(shards [][]byte, sl int, skip []bool) error {
	if len(shards) != c.k+c.m {
		return fmt.Errorf("codec: %d shards given, want k+m = %d", len(shards), c.k+c.m)
	}
	present := 0
	for i, s := range shards {
		if s == nil || (skip != nil && skip[i]) {
			continue
		}
		if len(s) != sl {
			return fmt.Errorf("codec: shard %d is %d bytes, want %d: %w", i, len(s), sl, ErrShardSize)
		}
		present++
	}
	if present < c.k {
		return fmt.Errorf("codec: %d of %d shards present, need %d: %w", present, c.k+c.m, c.k, ErrTooFewShards)
	}
	return nil
}

// Decode writes the blockLen bytes of a block to dst[:blockLen] from its
// shards: len(shards) == k+m, in shard order, nil for a shard that is
// missing or failed its checksum; every other shard must be
// ShardLen(blockLen, k) bytes long (ErrShardSize names the first that is
// not). Decode reads shards and never modifies them or the slice.
//
// When every data shard holding block bytes is present, they are copied to
// dst and nothing is decoded (reconstructed is false). Otherwise the
// missing ones are rebuilt from k present shards straight into their place
// in dst (reconstructed is true). Fewer than k present shards is
// ErrTooFewShards, whichever they are. Decode does not verify checksums.
//
// cap(dst) must be at least blockLen. Zero copy: a caller that reads data
// shard i straight into dst[i*sl:(i+1)*sl] (sl = ShardLen(blockLen, k); give
// dst a capacity of k*sl for the padding of the last one) and passes that
// slice as shards[i] saves its copy. No other shard may overlap dst.
func (c *Codec) Decode(shards [][]byte, blockLen int, dst []byte) (reconstructed bool, err error) {
	if blockLen < 0 {
		return false, fmt.Errorf("codec: block length %d is negative", blockLen)
	}
	if cap(dst) < blockLen {
		return false, fmt.Errorf("codec: destination holds %d bytes, block is %d", cap(dst), blockLen)
	}
	sl := ShardLen(blockLen, c.k)
	if err := c.checkShards(shards, sl, nil); err != nil {
		return false, err
	}
	dst = dst[:blockLen]
	// Where each data shard holding block bytes is read from: the shard
	// given, or for a missing one the place it is rebuilt into, its place
	// in dst when dst has room for its padding, else a scratch buffer.
	needed := dataShardsHolding(blockLen, c.k)
	plan := c.getWork()
	defer c.putWork(plan)
	src := plan.shards[:needed]
	var scratch *[]byte
	for i := range needed {
		switch {
		case shards[i] != nil:
			src[i] = shards[i]
		case (i+1)*sl <= cap(dst):
			src[i] = dst[i*sl : (i+1)*sl : (i+1)*sl]
			reconstructed = true
		default: // only the shard straddling the end of the block
			scratch = bufpool.Get(sl)
			src[i] = *scratch
			reconstructed = true
		}
	}
	if scratch != nil {
		defer bufpool.Put(scratch)
	}
	if reconstructed {
		if err := c.rebuildData(shards, src); err != nil {
			return false, err
		}
	}
	for i, s := range src {
		copyShard(dst, s, i*sl)
	}
	return reconstructed, nil
}

// rebuildData rebuilds the missing data shards (nil in shards) that hold
// block bytes into their src, from k present shards.
func (c *Codec) rebuildData(shards, src [][]byte) error {
	if c.enc == nil {
		return fmt.Errorf("codec: reconstruct %s: no parity: %w", c, ErrTooFewShards)
	}
	w := c.getWork()
	defer c.putWork(w)
	for i, s := range shards {
		switch {
		case s != nil:
			w.shards[i] = s
		case i < len(src):
			w.shards[i] = src[i][:0] // len 0, cap sl: filled in place
			w.required[i] = true
		}
	}
	// required covers only the data shards: parity is not rebuilt.
	if err := c.enc.ReconstructSome(w.shards, w.required[:c.k]); err != nil {
		return fmt.Errorf("codec: reconstruct %s: %w", c, mapErr(err))
	}
	return nil
}

// dataShardsHolding is how many data shards hold block bytes; the others
// are only padding (a 5-byte block in 4 shards of 2 leaves shard 3 empty).
func dataShardsHolding(blockLen, k int) int {
	sl := ShardLen(blockLen, k)
	if sl == 0 {
		return 0
	}
	return ShardLen(blockLen, sl)
}

// copyShard copies the block bytes of a data shard to dst[at:], cut at
// len(dst), unless they are there already.
func copyShard(dst, shard []byte, at int) {
	part := dst[min(at, len(dst)):min(at+len(shard), len(dst))]
	if len(part) == 0 || &part[0] == &shard[0] {
		return
	}
	copy(part, shard)
}

// Reconstruct rebuilds the shards whose indexes are in want, for repair:
// their current content is ignored and every other nil shard counts as
// missing. Present shards must be ShardLen(blockLen, k) bytes long, and at
// least k must be present besides the wanted ones (ErrTooFewShards).
//
// Ownership: a wanted shard whose capacity is at least ShardLen is rebuilt
// in place, resliced to that length (pass buf[:0] to rebuild into your own,
// e.g. pooled, memory); otherwise shards[i] is set to a new slice from
// make. Either way the slice belongs to the caller: nothing is taken from
// or returned to this package's pools. Shards not in want are untouched.
func (c *Codec) Reconstruct(shards [][]byte, blockLen int, want []int) error {
	if blockLen < 0 {
		return fmt.Errorf("codec: block length %d is negative", blockLen)
	}
	if len(shards) != c.k+c.m {
		return fmt.Errorf("codec: %d shards given, want k+m = %d", len(shards), c.k+c.m)
	}
	w := c.getWork()
	defer c.putWork(w)
	wanted := w.required // also ReconstructSome's required
	for _, i := range want {
		if i < 0 || i >= c.k+c.m {
			return fmt.Errorf("codec: wanted shard %d out of range [0, %d)", i, c.k+c.m)
		}
		wanted[i] = true
	}
	sl := ShardLen(blockLen, c.k)
	if err := c.checkShards(shards, sl, wanted); err != nil {
		return err
	}
	if len(want) == 0 {
		return nil
	}
	for _, i := range want {
		if shards[i] != nil && cap(shards[i]) >= sl {
			shards[i] = shards[i][:sl]
		} else {
			shards[i] = make([]byte, sl)
		}
	}
	if sl == 0 {
		return nil
	}
	if c.enc == nil {
		return fmt.Errorf("codec: reconstruct %s: no parity: %w", c, ErrTooFewShards)
	}
	for i, s := range shards {
		if wanted[i] {
			s = s[:0:sl] // len 0, cap sl: filled in place
		}
		w.shards[i] = s
	}
	if err := c.enc.ReconstructSome(w.shards, wanted); err != nil {
		return fmt.Errorf("codec: reconstruct %s: %w", c, mapErr(err))
	}
	return nil
}

// mapErr turns reedsolomon's ErrTooFewShards into ours, so callers test one.
func mapErr(err error) error {
	if errors.Is(err, reedsolomon.ErrTooFewShards) {
		return fmt.Errorf("%w: %w", ErrTooFewShards, err)
	}
	return err
}
