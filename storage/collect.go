package storage

import (
	"context"
	"errors"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// collectOrphans periodically deletes local shard files that no blob and
// no pending put refers to, or that a blob's metadata places on another
// agent, once they are older than OrphanGrace.
func (s *Store) collectOrphans(ctx context.Context) {
	t := time.NewTicker(s.cfg.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n := s.CollectOrphans(ctx, time.Now()); n > 0 {
			s.log.Info("collected orphan shards", "shards", n)
		}
	}
}

// CollectOrphans runs one orphan collection pass and returns how many
// shard files it deleted. Candidates are the shards older than OrphanGrace
// that this agent's replica does not place here; the leader, whose
// metadata is current, confirms them before they are deleted.
func (s *Store) CollectOrphans(ctx context.Context, now time.Time) int {
	meta := s.cluster.Meta()
	self := s.cluster.Self()
	// Each candidate keeps what it was when judged: only that file (or
	// staged shard) is deleted, never one stored under its name since.
	var refs []*pb.ShardRef
	var cands []orphan
	err := s.shards.WalkStamped(func(id shardstore.ID, st shardstore.Stamp) error {
		if now.Sub(st.Mod()) >= s.cfg.OrphanGrace && !referencedBy(meta, self, id.Blob, id.Block, uint32(id.Index)) {
			refs = append(refs, shardRef(id))
			cands = append(cands, orphan{id: id, file: st})
		}
		return nil
	})
	if err != nil {
		s.log.Warn("walk shards for orphans", "err", err)
	}
	// A part file with a bad header lists no shards; once its blob is gone
	// it is an orphan as a whole (while the blob exists, repair replaces
	// it).
	type badPart struct {
		blob  string
		index uint16
		st    shardstore.Stamp
	}
	var bad []badPart
	err = s.shards.WalkBadParts(func(blob string, index uint16, st shardstore.Stamp) error {
		if now.Sub(st.Mod()) >= s.cfg.OrphanGrace && meta.BlobByID(blob) == nil && meta.PendingBlob(blob) == nil {
			bad = append(bad, badPart{blob, index, st})
		}
		return nil
	})
	if err != nil {
		s.log.Warn("walk bad part files for orphans", "err", err)
	}
	for _, st := range s.shards.Staged() {
		if now.Sub(st.At) >= s.cfg.OrphanGrace && !referencedBy(meta, self, st.ID.Blob, st.ID.Block, uint32(st.ID.Index)) {
			refs = append(refs, shardRef(st.ID))
			cands = append(cands, orphan{id: st.ID, staged: st.At})
		}
	}
	for _, bp := range bad { // the leader confirms the blob is gone
		refs = append(refs, &pb.ShardRef{BlobId: bp.blob, Index: uint32(bp.index)})
		cands = append(cands, orphan{id: shardstore.ID{Blob: bp.blob, Index: bp.index}, file: bp.st, badPart: true})
	}
	if len(refs) == 0 {
		return 0
	}
	req := &pb.ReferencedRequest{Node: self, Shards: refs}
	referenced, err := s.cluster.Leader().Referenced(ctx, req)
	if err != nil || len(referenced) != len(refs) {
		s.log.Info("orphan shards not confirmed by the leader; keeping them for now", "shards", len(refs), "err", err)
		return 0
	}
	n := 0
	type part struct {
		blob  string
		index uint16
	}
	var files []part
	blocks := make(map[part][]uint32)
	stamps := make(map[part]shardstore.Stamp)
	for i, c := range cands {
		if referenced[i] {
			continue
		}
		if !c.staged.IsZero() {
			if s.shards.DiscardIfSame(c.id, c.staged) {
				n++
			}
			continue
		}
		if c.badPart {
			if _, err := s.shards.DeleteIfSame(c.id.Blob, c.id.Index, nil, c.file); err != nil {
				s.log.Warn("delete orphan part file", "blob_id", c.id.Blob, "shard", c.id.Index, "err", err)
			}
			continue
		}
		k := part{c.id.Blob, c.id.Index}
		if _, ok := blocks[k]; !ok {
			files = append(files, k)
		}
		blocks[k] = append(blocks[k], c.id.Block)
		stamps[k] = c.file
	}
	// A part file's orphan shards go in one step, judged against the
	// file as the walk saw it.
	for _, k := range files {
		deleted, err := s.shards.DeleteIfSame(k.blob, k.index, blocks[k], stamps[k])
		if err != nil {
			s.log.Warn("delete orphan shards", "blob_id", k.blob, "shard", k.index, "err", err)
			continue
		}
		n += deleted
	}
	s.metrics.shardsCollected.Add(float64(n))
	return n
}

// orphan is a shard file, or a staged shard (staged is when), judged an
// orphan by this agent's replica.
type orphan struct {
	id      shardstore.ID
	file    shardstore.Stamp
	staged  time.Time
	badPart bool // a part file with a bad header, of a blob gone
}

// referencedBy reports whether shard (blob, block, index) on node belongs
// to a pending put, or to a blob whose metadata places it on node.
func referencedBy(meta Meta, node, blob string, block, index uint32) bool {
	if meta.PendingBlob(blob) != nil {
		return true
	}
	b := meta.BlobByID(blob)
	if b == nil || int(block) >= len(b.Blocks) || int(index) >= len(b.Blocks[block].Holders) {
		return false
	}
	return b.Holder(b.Blocks[block], int(index)) == node
}

// referenced answers Referenced from this (the leader's) replica. A shard
// of a block that repair is storing on the asking agent counts as
// referenced too: the rebuilt shard is durable there before its holder is
// recorded, and its file may be older than the orphan grace (it was
// staged earlier), so deleting it in between would record a holder
// without its shard.
func (s *Store) referenced(req *pb.ReferencedRequest) []bool {
	meta := s.cluster.Meta()
	out := make([]bool, len(req.Shards))
	for i, ref := range req.Shards {
		out[i] = referencedBy(meta, req.Node, ref.GetBlobId(), ref.GetBlock(), ref.GetIndex()) ||
			s.repair.placingOn(req.Node, ref.GetBlobId(), ref.GetBlock())
	}
	return out
}

// scrub re-reads every local shard at ScrubRate bytes per second, reports
// corrupt ones for repair, then rests ScrubInterval before the next pass.
func (s *Store) scrub(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.ScrubInterval):
		}
		s.ScrubOnce(ctx, s.cfg.ScrubRate)
	}
}

// ScrubOnce verifies every shard this agent's replica of the metadata
// places here, at most rate bytes per second (0: as fast as the disk goes),
// reports those that are corrupt or missing (a deleted file, a replaced
// disk) for repair, and returns how many it reported; missing ones only
// when the replica has caught up with the leader. Shard files the
// metadata does not place here are orphan collection's business, not the
// scrubber's.
func (s *Store) ScrubOnce(ctx context.Context, rate int64) int {
	// A replica behind the leader's may still place here a shard whose
	// blob was deleted since: its missing file is no loss. Such a pass
	// verifies what it finds and reports corrupt shards only.
	behind := s.catchUp(ctx)
	if behind != nil {
		s.log.Warn("scrubbing with a replica that may be behind the leader's; missing shards are not reported this pass", "err", behind)
	}
	meta := s.cluster.Meta()
	self := s.cluster.Self()
	blobs, _ := meta.Blobs("")
	bad := badShards{s: s}
	defer bad.flush()
	start := time.Now()
	var done int64
	for _, b := range blobs {
		for bi, blk := range b.Blocks {
			for idx := range blk.Holders {
				if b.Holder(blk, idx) != self {
					continue
				}
				if ctx.Err() != nil {
					return bad.n
				}
				id := shardstore.ID{Blob: b.Id, Block: uint32(bi), Index: uint16(idx)}
				err := s.mapReadErr(s.shards.Verify(id))
				ref := &pb.ShardRef{BlobId: b.Id, Block: uint32(bi), Index: uint32(idx), Node: self}
				switch {
				case errors.Is(err, ErrCorrupt):
					bad.add(ref, false)
				case errors.Is(err, ErrNotFound) && behind != nil: // perhaps deleted since: not a loss to report
				case errors.Is(err, ErrNotFound) && referencedBy(meta, self, b.Id, uint32(bi), uint32(idx)):
					bad.add(ref, true) // still ours: not deleted or moved meanwhile
				case err != nil:
					s.log.Warn("scrub shard", "blob_id", b.Id, "block", bi, "shard", idx, "err", err)
				default:
					size := int64(codec.ShardLen(int(blk.Len), int(b.DataShards)))
					done += size
					s.metrics.scrubbedBytes.Add(float64(size))
				}
			}
			if !s.scrubPace(ctx, rate, start, done) {
				return bad.n
			}
		}
	}
	return bad.n
}

// badShards gathers the corrupt and the lost shards a pass finds and
// reports them for repair, scrubReportBatch at a time.
type badShards struct {
	s             *Store
	corrupt, lost []*pb.ShardRef
	n             int // shards added
}

// add adds a corrupt shard, or a lost one.
func (r *badShards) add(ref *pb.ShardRef, lost bool) {
	if lost {
		r.lost = append(r.lost, ref)
	} else {
		r.corrupt = append(r.corrupt, ref)
	}
	r.n++
	if len(r.corrupt)+len(r.lost) >= scrubReportBatch {
		r.flush()
	}
}

// flush reports the shards added since the last flush.
func (r *badShards) flush() {
	if len(r.corrupt) > 0 {
		r.s.reportShards(r.corrupt, false)
	}
	if len(r.lost) > 0 {
		r.s.reportShards(r.lost, true)
	}
	r.corrupt, r.lost = nil, nil
}

// checkHeldAtStart runs once when the agent starts: once its replica has
// caught up with the leader, CheckHeld reports what its files lack. A
// replaced or wiped disk would otherwise wait for the scrubber's first
// pass, ScrubInterval (an hour by default) later, or for reads, which
// never touch parity shards: meanwhile its blobs would have a shard per
// block fewer than the metadata says.
func (s *Store) checkHeldAtStart(ctx context.Context) {
	for {
		rev, err := s.cluster.LeaderRevision(ctx)
		if err == nil && s.waitRevision(ctx, rev, 5*time.Second) == nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	if n := s.CheckHeld(ctx); n > 0 {
		s.log.Warn("this agent lacks shards the metadata places on it (a replaced or wiped disk?); reported them for repair", "shards", n)
	}
}

// CheckHeld reports for repair every shard this agent's replica of the
// metadata places here that its files do not hold, or hold with another
// CRC32C than the metadata's, and returns how many it reported. It reads
// the part files' frame headers only, not the payloads (the scrubber's
// work).
func (s *Store) CheckHeld(ctx context.Context) int {
	meta := s.cluster.Meta()
	self := s.cluster.Self()
	blobs, _ := meta.Blobs("")
	bad := badShards{s: s}
	defer bad.flush()
	for _, b := range blobs {
		if ctx.Err() != nil {
			return bad.n
		}
		parts := make(map[int]map[uint32]uint32) // index -> block -> sum held
		for bi, blk := range b.Blocks {
			for idx := range blk.Holders {
				if b.Holder(blk, idx) != self {
					continue
				}
				held, ok := parts[idx]
				if !ok {
					held = s.heldSums(b.Id, idx)
					parts[idx] = held
				}
				if held == nil { // the part file is unreadable: the scrubber's
					continue
				}
				ref := &pb.ShardRef{BlobId: b.Id, Block: uint32(bi), Index: uint32(idx), Node: self}
				if sum, ok := held[uint32(bi)]; !ok || sum != blk.Sums[idx] {
					bad.add(ref, !ok)
				}
			}
		}
	}
	return bad.n
}

// heldSums lists the blocks this agent holds of shard index of blob, with
// the CRC32C of each: empty when it has no part file for it, nil when the
// part file cannot be read.
func (s *Store) heldSums(blob string, index int) map[uint32]uint32 {
	part, err := s.shards.Held(blob, uint16(index))
	switch {
	case errors.Is(err, shardstore.ErrNotFound):
		return map[uint32]uint32{}
	case err != nil:
		s.log.Warn("list the shards of a part file", "blob_id", blob, "shard", index, "err", err)
		return nil
	}
	out := make(map[uint32]uint32, len(part.Blocks))
	for i, b := range part.Blocks {
		out[b] = part.Sums[i]
	}
	return out
}

// scrubReportBatch is how many bad shards the scrubber reports at once.
const scrubReportBatch = 256

// scrubPace sleeps until done bytes verified since start are within rate
// bytes per second; false when ctx ended meanwhile.
func (s *Store) scrubPace(ctx context.Context, rate int64, start time.Time, done int64) bool {
	if rate <= 0 {
		return true
	}
	ahead := time.Duration(float64(done)/float64(rate)*float64(time.Second)) - time.Since(start)
	if ahead <= 0 {
		return true
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(ahead):
		return true
	}
}
