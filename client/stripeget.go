package client

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/bufpool"
	"github.com/zrpcio/zrpc/internal/wirecodec"
	"github.com/zrpcio/zrpc/storage/codec"
)

// Client-striped reads: the client reads each block's shards straight
// from the agents holding them and decodes itself.
//
// One goroutine per holder agent streams, in block order, the shards it
// holds of the blocks in the range (one ReadShards call per
// maxReadShards). A shard that fails (its agent sends an error, its bytes
// fail the metadata's CRC32C, its agent's stream breaks) is replaced by
// another shard of the same block, a parity shard, from another agent;
// blocks already read are kept, so the read never starts over. An
// assembler goroutine takes the blocks in order, decodes a block only
// when a data shard is missing, hashes whole reads, and hands the bytes
// to the reader. A shard's bytes stay in the HTTP/2 frames they arrived
// in (wirecodec.BorrowPieces): checked there, hashed there and copied
// from there into the reader's buffer, or, for a block that is decoded,
// into their place in the block. Holders fetch at most readWindow blocks
// past the one the reader is at: memory is about readWindow blocks
// whatever the blob's size, plus what the holders' streams queue within
// their flow-control windows (agentconns.go). A block that cannot be
// read from the holders (fewer than k shards reachable) is read through
// an agent's Get instead.

const (
	// readWindow is how many blocks a read holds at most, from the one
	// being read on.
	readWindow = 8
	// maxReadShards is the most shards one ReadShards call asks for, the
	// agents' limit.
	maxReadShards = 1024
)

// shardStall bounds the wait for one shard from an agent, once the read
// wants it: an agent that sends nothing for that long (a hung disk, a
// connection that still answers pings) counts as failed, as the agents'
// own reads bound a shard transfer. A variable for tests.
var shardStall = 30 * time.Second

// errShardStalled ends the stream of an agent that sent no shard within
// shardStall.
var errShardStalled = errors.New("no shard within the stall bound")

// getLocated reads the blob loc locates.
func (c *Client) getLocated(ctx context.Context, loc *zrpcpb.LocateResponse, opts GetOptions) (*BlobReader, error) {
	b := loc.GetBlob()
	if err := checkLocated(b, loc.GetAddresses()); err != nil {
		return nil, err
	}
	switch {
	case opts.Offset > b.Size:
		return nil, fmt.Errorf("%w: offset %d is past the end of blob %q (%d bytes)", apierr.ErrInvalidArgument, opts.Offset, b.Name, b.Size)
	case opts.Length > math.MaxInt64:
		return nil, fmt.Errorf("%w: length %d is larger than any blob (at most %d bytes; 0 reads to the end)",
			apierr.ErrInvalidArgument, opts.Length, uint64(math.MaxInt64))
	}
	start, end := clampRange(b.Size, opts)
	r := &BlobReader{blob: blobSummary(b), want: end - start}
	whole := start == 0 && end == b.Size
	if len(b.Blocks) == 0 || start == end {
		chunk := b.Inline[min(start, uint64(len(b.Inline))):min(end, uint64(len(b.Inline)))]
		r.next = func() ([]byte, error) {
			if len(chunk) == 0 {
				return nil, io.EOF
			}
			out := chunk
			chunk = nil
			return out, nil
		}
		r.stop = func() {}
		if whole {
			sum := sha256.Sum256(b.Inline)
			r.digest = func() []byte { return sum[:] }
		}
		return r, nil
	}
	g, err := c.newStripedGet(ctx, b, loc.GetAddresses(), start, end, whole, opts.MinRevision)
	if err != nil {
		return nil, err
	}
	r.next, r.stop = g.next, g.close
	r.buffered = func() bool { return len(g.cur) > 0 }
	if whole {
		r.digest = func() []byte { return g.digest }
	}
	return r, nil
}

// blobSummary is b without its bytes and placement, as the agent's Get
// describes a blob.
func blobSummary(b *zrpcpb.Blob) *zrpcpb.Blob {
	return &zrpcpb.Blob{
		Name: b.Name, Id: b.Id, Size: b.Size, DataShards: b.DataShards, ParityShards: b.ParityShards,
		BlockSize: b.BlockSize, Sha256: b.Sha256, Created: b.Created,
		CreateRevision: b.CreateRevision, ModRevision: b.ModRevision,
	}
}

// checkLocated checks that a Locate answer is metadata a read can index
// without further checks.
func checkLocated(b *zrpcpb.Blob, addrs []string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("locate blob %q: the agent answered unusable metadata: "+format, append([]any{b.GetName()}, args...)...)
	}
	switch {
	case b == nil:
		return fmt.Errorf("locate: the agent answered no blob")
	case len(addrs) != len(b.Nodes):
		return bad("%d addresses for %d agents", len(addrs), len(b.Nodes))
	case len(b.Blocks) == 0 && uint64(len(b.Inline)) != b.Size:
		return bad("%d inline bytes, size %d", len(b.Inline), b.Size)
	case len(b.Blocks) == 0:
		return nil
	case b.DataShards == 0 || b.DataShards+b.ParityShards > codec.MaxShards || b.BlockSize == 0:
		return bad("%d+%d shards per block of %d bytes", b.DataShards, b.ParityShards, b.BlockSize)
	}
	n := int(b.DataShards + b.ParityShards)
	var total uint64
	for i, blk := range b.Blocks {
		if len(blk.Holders) != n || len(blk.Sums) != n || blk.Len == 0 || blk.Len > b.BlockSize ||
			(i < len(b.Blocks)-1 && blk.Len != b.BlockSize) {
			return bad("block %d has %d holders, %d sums and %d bytes", i, len(blk.Holders), len(blk.Sums), blk.Len)
		}
		for _, h := range blk.Holders {
			if int(h) > len(b.Nodes) {
				return bad("block %d names agent %d of %d", i, h, len(b.Nodes))
			}
		}
		total += uint64(blk.Len)
	}
	if total != b.Size {
		return bad("blocks hold %d bytes, size %d", total, b.Size)
	}
	return nil
}

// shardPos is one shard of a blob.
type shardPos struct{ block, index int }

// stripedGet is one client-striped read of blocks first..last of a blob.
type stripedGet struct {
	c      *Client
	blob   *zrpcpb.Blob
	addrs  []string
	codec  *codec.Codec
	k      int
	first  int
	start  uint64 // the range's first byte
	end    uint64 // the byte after its last
	minRev uint64

	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	blocks []*readBlockState // blocks first..last
	down   []bool            // by index in blob.Nodes: its stream broke
	// By index in blob.Nodes: when the agent's streams last moved (one
	// began, sent a shard, or was let past the read window), and the
	// context its streams run in, which lagging cancels.
	moving     []time.Time
	nodeCtx    []context.Context
	nodeCancel []context.CancelCauseFunc
	pos        int           // the block the reader is at
	moved      chan struct{} // closed, and replaced, when pos moves

	out      chan assembled // the blocks in order, from the assembler
	cur      [][]byte       // what is left of the block being read, in pieces
	curBuf   *[]byte        // the decode buffer of the block being read
	curFrees []func()       // free the received buffers cur points into
	digest   []byte         // SHA-256 of a whole read, set before out closes
}

// readBlockState is the state of one block of a striped read.
type readBlockState struct {
	// want are the data shards holding the bytes of the range in this
	// block. While direct, only they are asked for, and the block is done
	// when they are read; once one fails, k shards are read and decoded.
	want   []int
	direct bool
	// shards are k+m, each in the pieces it was received in; nil until
	// read and checked.
	shards [][][]byte
	// frees free the received buffers shards point into
	// (wirecodec.BorrowPieces), by index; nil where there is none.
	frees   []func()
	asked   []bool  // asked for (read, in flight or failed)
	failed  []bool  // asked for and failed
	have    int     // shards read and checked
	pending int     // shards asked for, not answered yet
	errs    []error // why shards failed
	ready   chan struct{}
	done    bool      // ready is closed
	err     error     // set when done with fewer than k shards
	arrived time.Time // when a shard of the block last arrived or failed
}

// inFlight reports whether shard idx was asked for and has not arrived
// or failed yet.
func (sb *readBlockState) inFlight(idx int) bool {
	return sb.asked[idx] && sb.shards[idx] == nil && !sb.failed[idx]
}

// assembled is one block's bytes within the range, in pieces, or why it
// could not be read. buf, when set, is the pooled buffer the block was
// decoded into, and frees free the received buffers parts point into:
// the reader gives them back once it has read the block.
type assembled struct {
	block int
	parts [][]byte
	buf   *[]byte
	frees []func()
	err   error
}

// freeAll frees every received buffer of frees.
func freeAll(frees []func()) {
	for _, free := range frees {
		if free != nil {
			free()
		}
	}
}

// decodeBufs are the buffers blocks are decoded into.
var decodeBufs sync.Pool

func getDecodeBuf(n int) *[]byte {
	if b, ok := decodeBufs.Get().(*[]byte); ok && cap(*b) >= n {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n)
	return &b
}

func (c *Client) newStripedGet(ctx context.Context, b *zrpcpb.Blob, addrs []string, start, end uint64, whole bool, minRev uint64) (*stripedGet, error) {
	cd, err := codec.New(int(b.DataShards), int(b.ParityShards))
	if err != nil {
		return nil, fmt.Errorf("read blob %q: %w", b.Name, err)
	}
	bs := uint64(b.BlockSize)
	first, last := int(start/bs), int((end-1)/bs)
	g := &stripedGet{
		c: c, blob: b, addrs: addrs, codec: cd, k: int(b.DataShards), first: first, start: start, end: end, minRev: minRev,
		down: make([]bool, len(b.Nodes)), pos: first, moved: make(chan struct{}), out: make(chan assembled),
		moving: make([]time.Time, len(b.Nodes)), nodeCtx: make([]context.Context, len(b.Nodes)),
		nodeCancel: make([]context.CancelCauseFunc, len(b.Nodes)),
	}
	g.ctx, g.cancel = context.WithCancelCause(ctx)
	c.cancelOnClose(g.ctx, g.cancel)
	for node := range b.Nodes {
		g.nodeCtx[node], g.nodeCancel[node] = context.WithCancelCause(g.ctx)
	}
	n := int(b.DataShards + b.ParityShards)
	for i := first; i <= last; i++ {
		lo, hi := g.span(i)
		sl := uint64(codec.ShardLen(int(b.Blocks[i].Len), g.k))
		var want []int
		for idx := lo / sl; idx*sl < hi; idx++ {
			want = append(want, int(idx))
		}
		g.blocks = append(g.blocks, &readBlockState{want: want, direct: true,
			shards: make([][][]byte, n), frees: make([]func(), n), asked: make([]bool, n), failed: make([]bool, n),
			ready: make(chan struct{})})
	}
	g.mu.Lock()
	asks := make(map[int][]shardPos)
	for i := first; i <= last; i++ {
		g.plan(i, asks)
	}
	g.fetchAll(asks)
	g.mu.Unlock()
	g.wg.Add(1)
	go g.assemble(whole)
	return g, nil
}

// block is the state of block i; g.mu is held.
func (g *stripedGet) block(i int) *readBlockState { return g.blocks[i-g.first] }

// span is the part of block i the range covers, as offsets in the block.
func (g *stripedGet) span(i int) (lo, hi uint64) {
	start := uint64(i) * uint64(g.blob.BlockSize)
	return max(g.start, start) - start, min(g.end, start+uint64(g.blob.Blocks[i].Len)) - start
}

// holder is the index in blob.Nodes of the agent to ask for shard idx of
// block i, or -1 when there is none: the shard is missing, or its agent
// failed before or during this read.
func (g *stripedGet) holder(i, idx int) int {
	node := int(g.blob.Blocks[i].Holders[idx]) - 1
	if node < 0 || g.addrs[node] == "" || g.down[node] {
		return -1
	}
	return node
}

// plan chooses shards of block i to ask for and adds them to asks by
// agent: the data shards the range needs while they all have a holder to
// ask, else shards until k are read or asked for (data shards first, then
// parity) from agents that are alive and have not failed this read. A
// block that cannot reach k shards that way is done with an error. g.mu
// is held.
func (g *stripedGet) plan(i int, asks map[int][]shardPos) {
	sb := g.block(i)
	if sb.done {
		return
	}
	if sb.direct {
		for _, idx := range sb.want {
			if !sb.asked[idx] && g.holder(i, idx) < 0 {
				sb.direct = false
			}
		}
	}
	for idx := 0; idx < len(sb.asked); idx++ {
		if sb.direct && !slices.Contains(sb.want, idx) || !sb.direct && sb.have+sb.pending >= g.k {
			continue
		}
		node := g.holder(i, idx)
		if sb.asked[idx] || node < 0 {
			continue
		}
		sb.asked[idx] = true
		sb.pending++
		asks[node] = append(asks[node], shardPos{i, idx})
	}
	if sb.direct {
		return
	}
	if sb.have+sb.pending < g.k {
		sb.err = fmt.Errorf("%w: block %d of %q: %d of %d shards could be read from their holders, need %d",
			apierr.ErrNotEnoughShards, i, g.blob.Name, sb.have+sb.pending, len(sb.asked), g.k)
		if len(sb.errs) > 0 {
			sb.err = fmt.Errorf("%w (%w)", sb.err, errors.Join(sb.errs...))
		}
		sb.done = true
		close(sb.ready)
	}
}

// fetchAll starts one fetch per agent in asks. g.mu is held.
func (g *stripedGet) fetchAll(asks map[int][]shardPos) {
	if g.ctx.Err() != nil {
		return
	}
	for node, list := range asks {
		g.wg.Add(1)
		go g.fetch(node, list)
	}
}

// fetch reads the shards of list, in block order, from agent node.
func (g *stripedGet) fetch(node int, list []shardPos) {
	defer g.wg.Done()
	for len(list) > 0 {
		batch := list[:min(len(list), maxReadShards)]
		n, err := g.readShards(node, batch)
		if err != nil {
			g.agentFailed(node, list[n:], err)
			return
		}
		list = list[len(batch):]
	}
}

// readShards reads batch from agent node over one ReadShards stream and
// returns how many shards it answered (read, or failed on their own)
// before an error that ends the stream.
func (g *stripedGet) readShards(node int, batch []shardPos) (int, error) {
	g.touch(node)
	conn, err := g.c.agentConn(g.addrs[node])
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancelCause(g.nodeCtx[node])
	defer cancel(nil)
	stall := time.AfterFunc(shardStall, func() { cancel(errShardStalled) })
	defer stall.Stop()
	req := &zrpcpb.ReadShardsRequest{Name: g.blob.Name, BlobId: g.blob.Id, Shards: make([]*zrpcpb.ShardPos, len(batch))}
	for i, p := range batch {
		req.Shards[i] = &zrpcpb.ShardPos{Block: uint32(p.block), Index: uint32(p.index)}
	}
	// givenUp says why the read ended the stream, when it did.
	givenUp := func(err error) error {
		if cause := context.Cause(ctx); errors.Is(cause, errShardStalled) {
			return fmt.Errorf("agent %s: %w (%s)", g.blob.Nodes[node], errShardStalled, shardStall)
		} else if errors.Is(cause, errHolderLagged) {
			return fmt.Errorf("agent %s: %w", g.blob.Nodes[node], cause)
		}
		return err
	}
	stream, err := zrpcpb.NewBlobsClient(conn).ReadShards(ctx, req)
	if err != nil {
		return 0, givenUp(mapErr(err))
	}
	for i, p := range batch {
		stall.Stop()
		if err := g.waitWindow(p.block); err != nil {
			return i, givenUp(err)
		}
		g.touch(node)
		stall.Reset(shardStall)
		// The payload stays in the frames gRPC received it in until the
		// reader has read its block, or the block was decoded: free.
		msg := new(zrpcpb.ReadShardsResponse)
		done := wirecodec.BorrowPieces(msg, "payload")
		err := stream.RecvMsg(msg)
		payload, free := done()
		if payload == nil && len(msg.Payload) > 0 {
			payload = [][]byte{msg.Payload} // not read by the agents' codec
		}
		if err != nil {
			free()
			return i, givenUp(mapErr(err))
		}
		if got := msg.GetShard(); got.GetBlock() != uint32(p.block) || got.GetIndex() != uint32(p.index) {
			free()
			return i, fmt.Errorf("agent %s sent shard %d of block %d, asked for shard %d of block %d",
				g.blob.Nodes[node], got.GetIndex(), got.GetBlock(), p.index, p.block)
		}
		if msg.Error != "" {
			free()
			g.shardFailed(node, p, fmt.Errorf("agent %s: %s", g.blob.Nodes[node], msg.Error))
			continue
		}
		blk := g.blob.Blocks[p.block]
		n, sum, want := codec.PiecesLen(payload), codec.ChecksumPieces(payload), codec.ShardLen(int(blk.Len), g.k)
		if n != want || sum != blk.Sums[p.index] {
			free()
			g.shardFailed(node, p, fmt.Errorf("%w: shard %d of block %d from agent %s: %d bytes with checksum %08x, metadata says %d bytes with %08x",
				apierr.ErrCorrupt, p.index, p.block, g.blob.Nodes[node], n, sum, want, blk.Sums[p.index]))
			continue
		}
		g.shardRead(node, p, payload, free)
	}
	return len(batch), nil
}

// waitWindow waits until block is within readWindow blocks of the one
// the reader is at.
func (g *stripedGet) waitWindow(block int) error {
	for {
		g.mu.Lock()
		ok, moved := block < g.pos+readWindow, g.moved
		g.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-moved:
		case <-g.ctx.Done():
			return context.Cause(g.ctx)
		}
	}
}

// shardRead records payload, shard p in pieces, which free frees once it
// is no longer needed.
func (g *stripedGet) shardRead(node int, p shardPos, payload [][]byte, free func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	g.moving[node] = now
	sb := g.block(p.block)
	sb.arrived = now
	sb.pending--
	if sb.done {
		free()
		return
	}
	sb.shards[p.index] = payload
	sb.frees[p.index] = free
	sb.have++
	if sb.have >= g.k || sb.direct && sb.wanted() {
		sb.done = true
		close(sb.ready)
	}
}

// wanted reports whether every data shard the range needs was read.
func (sb *readBlockState) wanted() bool {
	for _, idx := range sb.want {
		if sb.shards[idx] == nil {
			return false
		}
	}
	return true
}

// shardFailed asks for another shard of p's block in place of p, which
// agent node could not give.
func (g *stripedGet) shardFailed(node int, p shardPos, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	g.moving[node] = now
	sb := g.block(p.block)
	sb.arrived = now
	sb.pending--
	sb.failed[p.index] = true
	sb.errs = append(sb.errs, err)
	sb.direct = false
	asks := make(map[int][]shardPos)
	g.plan(p.block, asks)
	g.fetchAll(asks)
}

// agentFailed takes agent node out of the read and asks other agents for
// shards in place of rest, the shards it did not answer.
func (g *stripedGet) agentFailed(node int, rest []shardPos, err error) {
	if g.ctx.Err() != nil {
		return
	}
	g.c.log.Debug("blob read: agent failed; reading parity from the others", "agent", g.blob.Nodes[node], "shards", len(rest), "err", err)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down[node] = true
	err = fmt.Errorf("agent %s: %w", g.blob.Nodes[node], err)
	for _, p := range rest {
		sb := g.block(p.block)
		sb.pending--
		sb.failed[p.index] = true
		sb.errs = append(sb.errs, err)
		sb.direct = false
	}
	asks := make(map[int][]shardPos)
	for _, p := range rest {
		g.plan(p.block, asks)
	}
	g.fetchAll(asks)
}

// assemble hands the range's blocks to the reader in order, decoding and
// hashing them, and reads a block the holders could not give through an
// agent.
func (g *stripedGet) assemble(whole bool) {
	defer g.wg.Done()
	defer close(g.out)
	var sha hash.Hash
	if whole {
		sha = sha256.New()
	}
	for i := g.first; i < g.first+len(g.blocks); i++ {
		g.mu.Lock()
		sb := g.block(i)
		g.mu.Unlock()
		if !g.await(i, sb) {
			return
		}
		a := assembled{block: i}
		var base uint64
		a.parts, base, a.buf, a.frees, a.err = g.blockBytes(i, sb)
		if a.err != nil {
			parts, err := g.blockThroughAgent(i)
			if err != nil {
				a.err = fmt.Errorf("%w; reading it through an agent failed too: %w", a.err, err)
			} else {
				a.parts, a.err = parts, nil
			}
		}
		if a.err == nil {
			a.parts = g.clip(i, base, a.parts)
			for _, p := range a.parts {
				if sha != nil {
					sha.Write(p)
				}
			}
		}
		select {
		case g.out <- a:
		case <-g.ctx.Done():
			if a.buf != nil {
				decodeBufs.Put(a.buf)
			}
			freeAll(a.frees)
			return
		}
		if a.err != nil {
			return
		}
	}
	if sha != nil {
		g.digest = sha.Sum(nil)
	}
}

// blockBytes returns bytes of block i, in pieces, from offset base in the
// block, that hold the range: its wanted data shards when all were read
// (no copy; frees free the buffers they were received in), else the whole
// block decoded from the k shards read into a pooled buffer, also
// returned (the shards' buffers are freed once it is decoded).
func (g *stripedGet) blockBytes(i int, sb *readBlockState) (parts [][]byte, base uint64, buf *[]byte, frees []func(), err error) {
	g.mu.Lock()
	shards, frees, err := sb.shards, sb.frees, sb.err
	sb.shards, sb.frees = nil, nil // the reader holds the bytes from now on
	g.mu.Unlock()
	if err != nil {
		freeAll(frees)
		return nil, 0, nil, nil, err
	}
	blockLen := int(g.blob.Blocks[i].Len)
	sl := codec.ShardLen(blockLen, g.k)
	for _, idx := range sb.want {
		if shards[idx] == nil {
			buf, err = g.decode(shards, blockLen)
			freeAll(frees)
			if err != nil {
				return nil, 0, nil, nil, fmt.Errorf("decode block %d of %q: %w", i, g.blob.Name, err)
			}
			return [][]byte{(*buf)[:blockLen]}, 0, buf, nil, nil
		}
		parts = appendPrefix(parts, shards[idx], min(sl, blockLen-idx*sl))
	}
	return parts, uint64(sb.want[0] * sl), nil, frees, nil
}

// appendPrefix appends the first n bytes of pieces to parts.
func appendPrefix(parts, pieces [][]byte, n int) [][]byte {
	for _, p := range pieces {
		if n <= 0 {
			break
		}
		parts = append(parts, p[:min(n, len(p))])
		n -= len(p)
	}
	return parts
}

// decode decodes a block of blockLen bytes from shards (k+m, in pieces,
// at least k present) into a buffer from decodeBufs. Each data shard read
// is copied once, into its place in that buffer, where decoding leaves
// it; parity shards are made contiguous only as far as k shards need.
func (g *stripedGet) decode(shards [][][]byte, blockLen int) (*[]byte, error) {
	sl := codec.ShardLen(blockLen, g.k)
	buf := getDecodeBuf(g.k * sl)
	flat := make([][]byte, len(shards))
	have := 0
	for idx := range g.k {
		if shards[idx] != nil {
			flat[idx] = (*buf)[idx*sl : (idx+1)*sl : (idx+1)*sl]
			copyPieces(flat[idx], shards[idx])
			have++
		}
	}
	var scratch []*[]byte
	for idx := g.k; idx < len(shards) && have < g.k; idx++ {
		switch {
		case shards[idx] == nil:
			continue
		case len(shards[idx]) == 1:
			flat[idx] = shards[idx][0]
		default:
			b := bufpool.Get(sl)
			scratch = append(scratch, b)
			flat[idx] = *b
			copyPieces(flat[idx], shards[idx])
		}
		have++
	}
	_, err := g.codec.Decode(flat, blockLen, *buf)
	for _, b := range scratch {
		bufpool.Put(b)
	}
	if err != nil {
		decodeBufs.Put(buf)
		return nil, err
	}
	return buf, nil
}

// copyPieces copies the bytes of pieces, in order, to dst.
func copyPieces(dst []byte, pieces [][]byte) {
	at := 0
	for _, p := range pieces {
		at += copy(dst[at:], p)
	}
}

// blockThroughAgent reads block i through an agent's Get, which gathers
// its shards itself.
func (g *stripedGet) blockThroughAgent(i int) ([][]byte, error) {
	bs := uint64(g.blob.BlockSize)
	r, err := g.c.getThroughAgent(g.ctx, g.blob.Name, GetOptions{
		Offset: uint64(i) * bs, Length: uint64(g.blob.Blocks[i].Len), MinRevision: g.minRev,
	})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if r.blob.Id != g.blob.Id {
		return nil, fmt.Errorf("%w: blob %q was replaced while it was read (id %s, now %s)", apierr.ErrNotFound, g.blob.Name, g.blob.Id, r.blob.Id)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return [][]byte{data}, nil
}

// clip cuts parts, block i's bytes from offset base in the block, to
// the range read.
func (g *stripedGet) clip(i int, base uint64, parts [][]byte) [][]byte {
	lo, hi := g.span(i)
	var out [][]byte
	at := base
	for _, p := range parts {
		pEnd := at + uint64(len(p))
		if pEnd > lo && at < hi {
			out = append(out, p[max(lo, at)-at:min(hi, pEnd)-at])
		}
		at = pEnd
	}
	return out
}

// next returns the range's next bytes, for BlobReader.
func (g *stripedGet) next() ([]byte, error) {
	for len(g.cur) == 0 {
		a, ok := <-g.out
		if !ok {
			if err := context.Cause(g.ctx); err != nil {
				return nil, err
			}
			return nil, io.EOF
		}
		if a.err != nil {
			return nil, a.err
		}
		if g.curBuf != nil {
			// The reader has copied every byte of the previous block.
			decodeBufs.Put(g.curBuf)
		}
		freeAll(g.curFrees)
		g.curBuf, g.curFrees = a.buf, a.frees
		g.mu.Lock()
		g.pos = a.block
		close(g.moved)
		g.moved = make(chan struct{})
		g.mu.Unlock()
		g.cur = a.parts
	}
	p := g.cur[0]
	g.cur = g.cur[1:]
	return p, nil
}

// close ends the read and waits for its goroutines, then frees the
// received shards of the blocks the reader did not get to. The block
// being read keeps its buffers (the garbage collector takes them): the
// reader may still hold its bytes.
func (g *stripedGet) close() {
	g.cancel(errReaderClosed)
	g.wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, sb := range g.blocks {
		freeAll(sb.frees)
		sb.shards, sb.frees = nil, nil
	}
}

var errReaderClosed = errors.New("blob reader closed")
