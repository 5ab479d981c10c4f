package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// The shard streams of a client-striped put (stripeput.go): WriteShards
// takes one shard index of the put's blocks from the client, stages and
// checks them, and makes the part durable at the end.

// writeShardsWait bounds how long WriteShards waits for this agent's
// replica to apply the put's BeginPut.
const writeShardsWait = 2 * time.Second

// WriteShards takes one shard index of a client-striped put's blocks from
// recv, a client's stream: a header first, then one block per message,
// until recv returns io.EOF. Every shard is checked (block number,
// lengths, CRC32C) and staged; at the end this part is made durable (one
// fsync and one rename) and the answer lists every block of this index
// the agent now durably holds. On any error, or when the stream breaks,
// the part's staged shards are discarded. recv may return a message's
// payload in pieces (the frames it arrived in) instead of in the message;
// a payload is not used after recv is called again: its buffers may be
// reused.
func (s *Store) WriteShards(ctx context.Context, recv func() (*pb.WriteShardsRequest, [][]byte, error)) (*pb.WriteShardsResponse, error) {
	first, pieces, err := recv()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: WriteShards stream ended before its header", ErrInvalidArgument)
	}
	if err != nil {
		return nil, err
	}
	if first.GetHeader() == nil {
		return nil, fmt.Errorf("%w: the first message of WriteShards must carry its header", ErrInvalidArgument)
	}
	w, err := s.openShardWrite(ctx, first.Header)
	if err != nil {
		return nil, err
	}
	defer w.close()
	msg := first
	if first.BlockLen == 0 && len(first.Payload) == 0 && pieces == nil {
		msg = nil // a header alone
	}
	for {
		if msg != nil {
			if msg != first && msg.Header != nil {
				return nil, fmt.Errorf("%w: WriteShards carries one header, in its first message", ErrInvalidArgument)
			}
			if err := w.add(msg, pieces); err != nil {
				return nil, err
			}
		}
		msg, pieces, err = recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return w.commit(ctx)
}

// shardWrite is one WriteShards stream: one shard index of one put on
// this agent.
type shardWrite struct {
	s         *Store
	key       partKey
	name      string
	sc        Scheme
	blockSize uint32
	size      uint64 // 0: not known
	maxBlocks uint64
	seen      map[uint32]bool
	last      uint32 // highest block seen
	short     int64  // the short (last) block, -1 for none yet
	bytes     int64  // of the shards staged
	done      bool
	// abandoned: the commit was waited for no longer (the disk hangs in
	// fsync); it goes on aside and frees the part once it returns.
	abandoned bool
}

// partKey names one shard index of one blob.
type partKey struct {
	blob  string
	index uint16
}

// openShardWrite checks a WriteShards header against the pending put and
// claims its part: one stream per part at a time.
func (s *Store) openShardWrite(ctx context.Context, h *pb.WriteShardsHeader) (*shardWrite, error) {
	if err := checkPutID(h.Name, h.BlobId); err != nil {
		return nil, err
	}
	k, m, bs := h.DataShards, h.ParityShards, h.BlockSize
	schemeErr := checkScheme(k, m)
	switch {
	case schemeErr != nil:
		return nil, fmt.Errorf("%w: WriteShards header: %v", ErrInvalidArgument, schemeErr)
	case h.Index >= k+m:
		return nil, fmt.Errorf("%w: WriteShards header: shard index %d of a %d+%d blob", ErrInvalidArgument, h.Index, k, m)
	case bs < MinBlockSize || bs > MaxBlockSize:
		return nil, fmt.Errorf("%w: WriteShards header: block size %d, must be between %d and %d", ErrInvalidArgument, bs, MinBlockSize, MaxBlockSize)
	}
	if h.Revision > 0 {
		if err := s.waitRevision(ctx, h.Revision, writeShardsWait); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("%w: this agent's replica has not applied revision %d (the put's BeginPut) within %s; retry",
				apierr.ErrStaleRead, h.Revision, writeShardsWait)
		}
	}
	p := s.cluster.Meta().PendingBlob(h.BlobId)
	switch {
	case p == nil || p.Name != h.Name || p.LeaseExpires == 0:
		return nil, fmt.Errorf("%w: blob id %s is not a put in progress of blob %q (never begun, or aborted: lease expired?); begin the put again",
			ErrInvalidArgument, h.BlobId, h.Name)
	case p.DataShards != k || p.ParityShards != m || p.BlockSize != bs:
		return nil, fmt.Errorf("%w: WriteShards header says %d+%d shards of %d-byte blocks, the put began with %d+%d of %d",
			ErrInvalidArgument, k, m, bs, p.DataShards, p.ParityShards, p.BlockSize)
	}
	w := &shardWrite{
		s: s, key: partKey{h.BlobId, uint16(h.Index)}, name: h.Name, sc: Scheme{K: int(k), M: int(m)},
		blockSize: bs, size: p.Size, seen: make(map[uint32]bool), short: -1,
	}
	w.maxBlocks = s.maxBlocks(p.Size, int(bs), int(k+m))
	if _, busy := s.writing.LoadOrStore(w.key, true); busy {
		return nil, fmt.Errorf("%w: another WriteShards stream is writing shard %d of put %s on this agent; retry once it has ended",
			ErrAlreadyExists, h.Index, h.BlobId)
	}
	return w, nil
}

// maxBlocks is how many blocks a put may have: those of its size when it
// is known, else as many as the max blob size and the metadata bound allow.
func (s *Store) maxBlocks(size uint64, blockSize, n int) uint64 {
	bs := uint64(blockSize)
	if size > 0 {
		return (size + bs - 1) / bs
	}
	bySize := (uint64(s.cfg.MaxBlobSize) + bs - 1) / bs
	byMeta := uint64(0)
	if room := uint64(s.cfg.MaxMetadataBytes); room > 32<<10 {
		byMeta = (room - 32<<10) / uint64(6*n+16) // metadataBytes, solved for blocks
	}
	return min(bySize, byMeta)
}

// add checks one block's shard and stages it; its payload is pieces, or
// the message's when pieces is nil.
func (w *shardWrite) add(msg *pb.WriteShardsRequest, pieces [][]byte) error {
	b, blockLen := msg.Block, msg.BlockLen
	if err := w.checkBlock(b, blockLen); err != nil {
		return err
	}
	if pieces == nil {
		pieces = [][]byte{msg.Payload}
	}
	n := codec.PiecesLen(pieces)
	if want := codec.ShardLen(int(blockLen), w.sc.K); n != want {
		return fmt.Errorf("%w: block %d: shard of %d bytes, a %d-byte block's shard has %d with %d data shards",
			ErrInvalidArgument, b, n, blockLen, want, w.sc.K)
	}
	h := shardstore.Header{
		ID: shardstore.ID{Blob: w.key.blob, Block: b, Index: w.key.index}, K: uint8(w.sc.K), M: uint8(w.sc.M),
		BlockLen: blockLen, ShardLen: uint32(n), Sum: msg.Sum, BlockSize: w.blockSize,
	}
	// StagePieces checks the payload's CRC32C against sum.
	if err := w.s.shards.StagePieces(h, pieces); err != nil {
		if errors.Is(err, shardstore.ErrCorrupt) {
			return fmt.Errorf("%w: block %d: the shard's CRC32C is not its sum %08x (corrupted on the way?)", ErrInvalidArgument, b, msg.Sum)
		}
		return fmt.Errorf("stage shard %d of block %d of %q: %w", w.key.index, b, w.name, mapShardErr(err))
	}
	w.seen[b] = true
	w.bytes += int64(n)
	w.last = max(w.last, b)
	if blockLen < w.blockSize {
		w.short = int64(b)
	}
	w.s.metrics.shardWrites.Inc()
	return nil
}

// checkBlock checks a block's number and length against the put: within
// its blocks, not sent before, full but for the blob's last block.
func (w *shardWrite) checkBlock(b, blockLen uint32) error {
	switch {
	case uint64(b) >= w.maxBlocks:
		return fmt.Errorf("%w: block %d: the put has at most %d blocks", ErrInvalidArgument, b, w.maxBlocks)
	case w.seen[b]:
		return fmt.Errorf("%w: block %d sent twice", ErrInvalidArgument, b)
	case blockLen == 0 || blockLen > w.blockSize:
		return fmt.Errorf("%w: block %d: length %d, must be 1 to the block size %d", ErrInvalidArgument, b, blockLen, w.blockSize)
	}
	if w.size > 0 {
		want := min(w.size-uint64(b)*uint64(w.blockSize), uint64(w.blockSize))
		if uint64(blockLen) != want {
			return fmt.Errorf("%w: block %d: length %d; block %d of a %d-byte blob has %d", ErrInvalidArgument, b, blockLen, b, w.size, want)
		}
		return nil
	}
	// Size unknown: only the last block is short, so none comes after it.
	switch {
	case w.short >= 0 && int64(b) > w.short:
		return fmt.Errorf("%w: block %d after the short block %d, which must be the blob's last", ErrInvalidArgument, b, w.short)
	case blockLen < w.blockSize && (w.short >= 0 || len(w.seen) > 0 && b < w.last):
		return fmt.Errorf("%w: block %d is short (%d bytes) but is not the blob's last block", ErrInvalidArgument, b, blockLen)
	}
	return nil
}

// commit makes the stream's part durable, once the put is still pending,
// and lists what this agent holds of it. The commit is bounded as a
// put's sync is (syncWithin): a disk that hangs in fsync would otherwise
// hold the stream, and the client with it, for as long as it hangs (an
// agent with a hung disk still answers health checks, and the client's
// lease renewals keep the put alive). One not done in time fails the
// stream, so that the client counts its shards lost; it goes on aside,
// holding the part until it returns, and orphan collection removes what
// it leaves.
func (w *shardWrite) commit(ctx context.Context) (*pb.WriteShardsResponse, error) {
	s := w.s
	if s.cluster.Meta().PendingBlob(w.key.blob) == nil {
		return nil, fmt.Errorf("%w: put %s of blob %q is not in progress: the put was aborted (lease expired?); retry the put",
			ErrNotFound, w.key.blob, w.name)
	}
	bound := s.syncWithin(w.bytes)
	cctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	n, err := s.commitAside(cctx, func() (int, error) { return s.shards.CommitStagedPart(w.key.blob, w.key.index) }, func(_ int, err error) {
		s.writing.Delete(w.key)
		s.log.Info("a commit of a striped put's shards that the put stopped waiting for has ended; orphan collection removes them",
			"blob", w.name, "id", w.key.blob, "shard", w.key.index, "err", err)
	})
	switch {
	case errors.Is(err, errCommitAbandoned) && ctx.Err() != nil:
		w.abandoned = true
		return nil, ctx.Err()
	case errors.Is(err, errCommitAbandoned):
		w.abandoned = true
		err = fmt.Errorf("%s: %w", s.diskHangs(s.cluster.Self(), fmt.Sprintf("shard %d of %q", w.key.index, w.name), w.bytes, bound), err)
		s.log.Warn("a striped put's shards were not made durable in time; the client counts them lost", "blob", w.name, "shard", w.key.index, "err", err)
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("make shard %d of %q durable: %w", w.key.index, w.name, mapShardErr(err))
	}
	w.done = true
	if n < len(w.seen) {
		return nil, fmt.Errorf("%w: %d of the %d shards sent were still staged: the put was aborted meanwhile and its shards collected; retry the put",
			ErrNotFound, n, len(w.seen))
	}
	hctx, hcancel := context.WithTimeout(ctx, s.cfg.ShardTimeout)
	defer hcancel()
	held, err := s.heldLocal(hctx, w.key.blob, []uint32{uint32(w.key.index)})
	if err != nil {
		return nil, fmt.Errorf("list shard %d of %q: %w", w.key.index, w.name, err)
	}
	resp := &pb.WriteShardsResponse{}
	if len(held) > 0 {
		resp.Blocks, resp.Sums = held[0].Blocks, held[0].Sums
	}
	return resp, nil
}

// close discards what the stream staged unless it committed, and frees
// its part for another stream; a commit it stopped waiting for frees the
// part once it returns, having taken the staged shards (a discard would
// wait for it).
func (w *shardWrite) close() {
	if w.abandoned {
		return
	}
	if !w.done {
		w.s.shards.DiscardStagedPart(w.key.blob, w.key.index)
	}
	w.s.writing.Delete(w.key)
}
