package codec

import (
	"errors"
	"fmt"

	"github.com/zrpcio/zrpc/internal/bufpool"
)

// MaxBlockLen is the largest block NewBlock makes room for (1 GiB); larger
// requests are clamped to it.
const MaxBlockLen = 1 << 30

// Block is one block's shards in one pooled contiguous buffer of
// (k+m)*ShardLen(maxBlockLen, k) bytes. For a block of blockLen bytes and
// sl = ShardLen(blockLen, k), shard i is buf[i*sl:(i+1)*sl]: the block's
// bytes laid from the start of the buffer are the data shards, followed by
// the zero padding and then the parity shards. Encoding therefore copies
// nothing.
//
// Use: b := c.NewBlock(max); n := fill(b.Data()); c.Encode(b, n); send
// b.Shards() and b.Sums(); b.Release(). A Block can be filled and encoded
// again before Release. It is not safe for concurrent use, except Lend and
// the release functions it returns.
//
// A sender that hands a shard to something that reads it later (gRPC
// writes a message's bytes after Send has returned) takes a Lend first:
// the buffer goes back to the pool only once the Block is released and
// every loan is returned.
type Block struct {
	c      *Codec
	maxLen int
	mem    *bufpool.Shared // nil after Release
	shards [][]byte
	sums   []uint32
	ok     bool // the last Encode succeeded: Shards and Sums are valid
}

// NewBlock returns a Block with room for a block of up to maxBlockLen bytes
// (clamped to [0, MaxBlockLen]), its buffer taken from a pool shared by all
// codecs and keyed by size class. Release gives it back.
func (c *Codec) NewBlock(maxBlockLen int) *Block {
	maxBlockLen = min(max(maxBlockLen, 0), MaxBlockLen)
	n := c.k + c.m
	b := &Block{
		c:      c,
		maxLen: maxBlockLen,
		mem:    bufpool.NewShared(n * ShardLen(maxBlockLen, c.k)),
		shards: make([][]byte, n),
		sums:   make([]uint32, n),
	}
	return b
}

// Data is the area to fill with the block's bytes: len is the maxBlockLen
// the Block was made with (after clamping). Encode(b, n) encodes Data()[:n]
// and overwrites the rest of Data() with padding and parity. Nil after
// Release.
func (b *Block) Data() []byte {
	if b.mem == nil {
		return nil
	}
	return b.mem.Bytes()[:b.maxLen:b.maxLen]
}

// Encode encodes the first blockLen bytes of b.Data(): zeroes the padding
// of the last data shards, computes the m parity shards in place and the
// CRC32C of every shard. Shards and Sums are valid until the next Encode or
// Release. b must come from c (or a Codec with the same k and m).
func (c *Codec) Encode(b *Block, blockLen int) error {
	switch {
	case b == nil || b.mem == nil:
		return errors.New("codec: encode: block is nil or released")
	case b.c.k != c.k || b.c.m != c.m:
		return fmt.Errorf("codec: encode: block made by a %s codec, this is %s", b.c, c)
	case blockLen < 0 || blockLen > b.maxLen:
		return fmt.Errorf("codec: encode: block length %d out of range [0, %d]", blockLen, b.maxLen)
	}
	b.ok = false
	sl := ShardLen(blockLen, c.k)
	buf := b.mem.Bytes()
	clear(buf[blockLen : c.k*sl])
	for i := range b.shards {
		b.shards[i] = buf[i*sl : (i+1)*sl : (i+1)*sl]
	}
	if c.enc != nil && sl > 0 {
		if err := c.enc.Encode(b.shards); err != nil {
			return fmt.Errorf("codec: encode %s: %w", c, err)
		}
	}
	for i, s := range b.shards {
		b.sums[i] = Checksum(s)
	}
	b.ok = true
	return nil
}

// Shards are the k+m shards of the block, data first, each
// ShardLen(blockLen, k) bytes, after a successful Encode; nil before it and
// after Release. They point into the Block's buffer.
func (b *Block) Shards() [][]byte {
	if b.mem == nil || !b.ok {
		return nil
	}
	return b.shards
}

// Sums is the CRC32C of each shard after a successful Encode; nil before it
// and after Release.
func (b *Block) Sums() []uint32 {
	if b.mem == nil || !b.ok {
		return nil
	}
	return b.sums
}

// Release gives the buffer back to the pool, once every Lend of it is
// returned. The Block and every slice obtained from it must not be used
// afterwards, except by holders of a loan until they return it. Calling it
// again does nothing.
func (b *Block) Release() {
	if b.mem == nil {
		return
	}
	clear(b.shards)
	b.mem.Release()
	b.mem = nil
	b.ok = false
}

// Lend keeps the Block's buffer out of the pool until the returned
// function is called (once; later calls do nothing), even when Release
// comes first: the Block's slices stay valid for whoever holds the loan.
// A Block already released lends nothing (the function does nothing).
// Lend may be called from several goroutines at once, not concurrently
// with Release; the function it returns may be called from any goroutine
// at any time.
func (b *Block) Lend() (release func()) {
	if b.mem == nil {
		return func() {}
	}
	return b.mem.Lend()
}
