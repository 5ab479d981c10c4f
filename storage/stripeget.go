package storage

import (
	"context"
	"errors"
	"fmt"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/bufpool"
	"github.com/zrpcio/zrpc/internal/wirecodec"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// The agent's side of client-striped reads: a client that holds the
// erasure code asks any agent where a blob's shards are (Locate), then
// reads the shards straight from their holders (ReadShards) and decodes
// itself.

// MaxReadShards is the most shards one ReadShards call may ask for.
const MaxReadShards = 1024

// Locate returns the whole metadata of the blob called name (blocks,
// holders, checksums; the bytes of an inline blob) once this replica has
// applied minRev, read with consistency c (see BlobGetRequest), and
// addrs[i], the gRPC address of b.Nodes[i]: "" when that agent is failed
// or no longer in the cluster. b is the replica's and must not be
// modified.
func (s *Store) Locate(ctx context.Context, name string, minRev uint64, c pb.Consistency) (b *pb.Blob, addrs []string, err error) {
	b, err = s.lookup(ctx, name, minRev, c)
	if err != nil {
		return nil, nil, err
	}
	alive := s.aliveSet()
	addrs = make([]string, len(b.Nodes))
	for i, node := range b.Nodes {
		if alive[node] {
			addrs[i] = s.cluster.Address(node)
		}
	}
	return b, addrs, nil
}

// ReadShards sends, in the order asked, each shard of req that this agent
// holds. The blob id must be that of the committed blob called req.Name
// (whose name the caller's permission was checked against), at most
// MaxReadShards shards may be asked for, and the metadata must place every
// one of them on this agent; otherwise nothing is sent and the error names
// what is wrong. A shard that cannot be read (missing, or failing its
// checksum) is sent with its error set and no payload, and reported to the
// leader's repair as the coordinator's Get does; the stream goes on with
// the next. One shard is read at a time, once send has taken the previous
// one, into a pooled buffer lent to gRPC (internal/wirecodec), which
// writes it by reference instead of copying it into the message and
// gives it back to the pool once written: the stream's memory is about
// one shard and what gRPC's flow control lets it queue.
//
// Each read is waited for within ShardTimeout and ctx (readOwn): a shard
// disk that hangs in reads ends the stream with an error naming the
// disk, and the caller reads parity from the other holders, rather than
// holding the stream, and its goroutine, for as long as the disk hangs.
func (s *Store) ReadShards(ctx context.Context, req *pb.ReadShardsRequest, send func(*pb.ReadShardsResponse) error) error {
	b, err := s.shardsAsked(ctx, req)
	if err != nil {
		return err
	}
	for _, pos := range req.Shards {
		if err := s.sendShard(ctx, b, pos, send); err != nil {
			return err
		}
	}
	return nil
}

// sendShard reads shard pos of b into a pooled buffer and sends it with
// send, lending the buffer to gRPC; a shard that cannot be read is sent
// with its error. A read the disk did not end in time, or that the disk
// could not take (diskHungError, the store closing), ends the stream
// with its error instead: the next reads would wait on the same disk.
func (s *Store) sendShard(ctx context.Context, b *pb.Blob, pos *pb.ShardPos, send func(*pb.ReadShardsResponse) error) error {
	buf := bufpool.NewShared(codec.ShardLen(int(b.Blocks[pos.Block].Len), int(b.DataShards)))
	defer buf.Release()
	msg := &pb.ReadShardsResponse{Shard: pos}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.ShardTimeout)
	payload, sum, err := s.readLocalShard(rctx, b, pos, buf.Bytes(), buf.Lend)
	cancel()
	switch {
	case errors.Is(err, errReadAbandoned) || errors.Is(err, errClosed) || errors.As(err, new(*diskHungError)):
		return err
	case err != nil:
		msg.Error = err.Error()
	default:
		msg.Sum, msg.Payload = sum, payload
		s.metrics.shardReads.Inc()
	}
	reclaim := wirecodec.Lend(msg, "payload", buf.Lend())
	err = send(msg)
	reclaim()
	return err
}

// shardsAsked checks a ReadShards request and returns its blob.
func (s *Store) shardsAsked(ctx context.Context, req *pb.ReadShardsRequest) (*pb.Blob, error) {
	if err := ValidateName(req.GetName()); err != nil {
		return nil, err
	}
	switch n := len(req.GetShards()); {
	case !ValidBlobID(req.GetBlobId()):
		return nil, fmt.Errorf("%w: blob_id %q: want the id Locate answered (16 to 64 lowercase hex digits)", ErrInvalidArgument, req.GetBlobId())
	case n == 0:
		return nil, fmt.Errorf("%w: shards: no shard asked for", ErrInvalidArgument)
	case n > MaxReadShards:
		return nil, fmt.Errorf("%w: shards: %d asked for, at most %d per call: split them over several calls", ErrInvalidArgument, n, MaxReadShards)
	}
	meta := s.cluster.Meta()
	b := meta.BlobByID(req.BlobId)
	if b == nil {
		// Perhaps committed a moment ago and not yet applied here.
		behind := s.catchUp(ctx)
		if b = meta.BlobByID(req.BlobId); b == nil && behind != nil {
			return nil, fmt.Errorf("blob %q version %s is not in this agent's replica, which cannot tell whether it exists: %w", req.Name, req.BlobId, behind)
		}
	}
	if b == nil || b.Name != req.Name {
		// The same answer whether the id is gone or another name's: the
		// caller may read req.Name only.
		return nil, fmt.Errorf("%w: blob %q has no version with id %s (deleted or overwritten? locate it again)", ErrNotFound, req.Name, req.BlobId)
	}
	self := s.cluster.Self()
	n := int(b.DataShards + b.ParityShards)
	for i, pos := range req.Shards {
		switch {
		case pos == nil:
			return nil, fmt.Errorf("%w: shards[%d] is empty", ErrInvalidArgument, i)
		case int(pos.Block) >= len(b.Blocks) || int(pos.Index) >= n || int(pos.Index) >= len(b.Blocks[pos.Block].Sums):
			return nil, fmt.Errorf("%w: shards[%d]: block %d shard %d: blob %q has %d blocks of %d shards",
				ErrInvalidArgument, i, pos.Block, pos.Index, b.Name, len(b.Blocks), n)
		}
		if holder := b.Holder(b.Blocks[pos.Block], int(pos.Index)); holder != self {
			return nil, fmt.Errorf("%w: shards[%d]: block %d shard %d of blob %q is not placed on agent %s (holder: %q); ask its holder",
				ErrInvalidArgument, i, pos.Block, pos.Index, b.Name, self, holder)
		}
	}
	return b, nil
}

// readLocalShard reads shard pos of b from this agent's part files into
// dst (when large enough; lend lends its memory to a read that may go on
// after ctx ends: readOwn), waited for until ctx ends, and checks it
// against the checksum the metadata records. A shard that is missing or
// fails a check is reported to the leader's repair and returned as an
// error wrapping ErrNotFound or ErrCorrupt; a read not ended in time
// wraps errReadAbandoned, naming the disk.
func (s *Store) readLocalShard(ctx context.Context, b *pb.Blob, pos *pb.ShardPos, dst []byte, lend func() func()) (payload []byte, sum uint32, err error) {
	id := shardstore.ID{Blob: b.Id, Block: pos.Block, Index: uint16(pos.Index)}
	want := b.Blocks[pos.Block].Sums[pos.Index]
	h, payload, err := s.readOwn(ctx, id, dst, lend)
	held := func() []*pb.ShardRef {
		return []*pb.ShardRef{{BlobId: b.Id, Block: pos.Block, Index: pos.Index, Node: s.cluster.Self()}}
	}
	switch {
	case errors.Is(err, ErrCorrupt):
		s.reportShards(held(), false)
	case errors.Is(err, ErrNotFound):
		s.reportShards(held(), true)
	case err == nil && h.Sum != want:
		// The part file's own checksum matched, but it is not the
		// shard the metadata records.
		s.reportShards(held(), false)
		err = fmt.Errorf("%w: shard %s/%d/%d on %s: checksum %08x, metadata says %08x",
			ErrCorrupt, b.Id, pos.Block, pos.Index, s.cluster.Self(), h.Sum, want)
	}
	if err != nil {
		return payload, 0, fmt.Errorf("read shard %s/%d/%d: %w", b.Id, pos.Block, pos.Index, err)
	}
	return payload, h.Sum, nil
}
