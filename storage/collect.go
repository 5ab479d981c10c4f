package storage

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
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
// metadata is current, confirms them before they are deleted. It is asked
// maxReferencedShards candidates at a time, and what each answer confirms
// is deleted whatever the later ones say: an agent back after a long
// absence holds more orphans than one request may carry. A request that
// fails keeps its candidates for a later pass and the pass goes on with
// the next one (a leader change fails one request, not the rest), until
// maxReferencedFailures have failed in a row (no leader answers, and each
// request would wait for one).
func (s *Store) CollectOrphans(ctx context.Context, now time.Time) int {
	cands := s.orphanCandidates(now)
	del := orphanDeletes{s: s}
	var (
		kept, notAsked, failed, inARow int
		why                            error
	)
	for chunk := range slices.Chunk(cands, maxReferencedShards) {
		if inARow == maxReferencedFailures {
			notAsked += len(chunk)
			continue
		}
		referenced, err := s.askReferenced(ctx, chunk)
		if err != nil {
			kept += len(chunk)
			failed++
			inARow++
			if why == nil {
				why = err
			}
			continue
		}
		inARow = 0
		for i, c := range chunk {
			if !referenced[i] {
				del.add(c)
			}
		}
	}
	del.flush()
	if kept+notAsked > 0 {
		s.log.Info("orphan shards not confirmed unreferenced by the leader; keeping them for a later pass",
			"kept", kept+notAsked, "candidates", len(cands), "failed_requests", failed, "not_asked", notAsked, "err", why)
	}
	s.metrics.shardsCollected.Add(float64(del.n))
	return del.n
}

// maxReferencedShards bounds the candidates of one Referenced request,
// as maxDeleteShardIDs bounds DeleteShards: at some 40 bytes a shard, a
// request stays near 170 KB, far below the agents' message limit
// (grpcapi.MaxRecvMessage, 9 MiB), which one request naming every orphan
// passed at about 236,000 shards: the leader refused each pass's request
// and nothing was ever collected.
const maxReferencedShards = 4096

// maxReferencedFailures is how many Referenced requests in a row may fail
// before an orphan collection pass stops asking.
const maxReferencedFailures = 2

// orphanCandidates lists the shards (and staged shards, and part files
// with a bad header) older than OrphanGrace at now that this agent's
// replica does not place here, in the order the walk found them: the
// blocks of one part file one after the other.
func (s *Store) orphanCandidates(now time.Time) []orphan {
	meta := s.cluster.Meta()
	self := s.cluster.Self()
	// Each candidate keeps what it was when judged: only that file (or
	// staged shard) is deleted, never one stored under its name since.
	var cands []orphan
	err := s.shards.WalkStamped(func(id shardstore.ID, st shardstore.Stamp) error {
		if now.Sub(st.Mod()) >= s.cfg.OrphanGrace && !referencedBy(meta, self, id.Blob, id.Block, uint32(id.Index)) {
			cands = append(cands, orphan{id: id, file: st})
		}
		return nil
	})
	if err != nil {
		s.log.Warn("walk shards for orphans", "err", err)
	}
	for _, st := range s.shards.Staged() {
		if now.Sub(st.At) >= s.cfg.OrphanGrace && !referencedBy(meta, self, st.ID.Blob, st.ID.Block, uint32(st.ID.Index)) {
			cands = append(cands, orphan{id: st.ID, staged: st.At})
		}
	}
	// A part file with a bad header lists no shards (its header fails its
	// check, or cannot be read now); while the blob exists, repair
	// replaces it. One of a blob this replica lacks is a candidate as a
	// whole: the leader is asked about the blob, not about a block.
	err = s.shards.WalkBadParts(func(blob string, index uint16, st shardstore.Stamp) error {
		if now.Sub(st.Mod()) >= s.cfg.OrphanGrace && meta.BlobByID(blob) == nil && meta.PendingBlob(blob) == nil {
			cands = append(cands, orphan{id: shardstore.ID{Blob: blob, Index: index}, file: st, badPart: true})
		}
		return nil
	})
	if err != nil {
		s.log.Warn("walk bad part files for orphans", "err", err)
	}
	return cands
}

// askReferenced asks the leader which of cands a blob or a pending put
// still refers to: a shard as its block on this agent, a part file with
// a bad header as its blob as a whole (anyBlock). The answers are in the
// order of cands.
func (s *Store) askReferenced(ctx context.Context, cands []orphan) ([]bool, error) {
	refs := make([]*pb.ShardRef, 0, len(cands)+1)
	whole := slices.ContainsFunc(cands, func(c orphan) bool { return c.badPart })
	if whole {
		refs = append(refs, &pb.ShardRef{Block: anyBlock}) // the probe
	}
	for _, c := range cands {
		refs = append(refs, c.ref())
	}
	referenced, err := s.cluster.Leader().Referenced(ctx, &pb.ReferencedRequest{Node: s.cluster.Self(), Shards: refs})
	if err == nil && len(referenced) != len(refs) {
		err = fmt.Errorf("the leader answered for %d shards, not %d", len(referenced), len(refs))
	}
	if err != nil {
		return nil, fmt.Errorf("ask the leader whether %d orphan shards are referenced: %w", len(cands), err)
	}
	if !whole {
		return referenced, nil
	}
	out := referenced[1:]
	if !referenced[0] {
		n := 0
		for i, c := range cands {
			if c.badPart {
				out[i] = true
				n++
			}
		}
		s.log.Warn("keeping part files with a bad header: the leader, of an older build, cannot tell whether their blobs still exist (it answers for single blocks only); upgrade it",
			"part_files", n)
	}
	return out, nil
}

// orphan is a shard file, or a staged shard (staged is when), judged an
// orphan by this agent's replica.
type orphan struct {
	id      shardstore.ID
	file    shardstore.Stamp
	staged  time.Time
	badPart bool // a part file with a bad header, of a blob this replica lacks
}

// ref is what the leader is asked about c.
func (c orphan) ref() *pb.ShardRef {
	if c.badPart {
		return &pb.ShardRef{BlobId: c.id.Blob, Block: anyBlock, Index: uint32(c.id.Index)}
	}
	return shardRef(c.id)
}

// orphanDeletes deletes the orphans the leader confirmed, in the order
// the walk found them. A part file's orphan blocks go in one step, judged
// against the file as the walk saw it, once its run of candidates ends:
// they may span two requests to the leader, and deleting the first
// request's alone would change the file, so that the second request's
// would wait for another pass and another OrphanGrace.
type orphanDeletes struct {
	s      *Store
	n      int           // shards deleted
	part   shardstore.ID // the part file of blocks (its Blob and Index)
	blocks []uint32      // confirmed orphan blocks of part
	stamp  shardstore.Stamp
}

// add deletes c, or keeps it for its part file's step.
func (d *orphanDeletes) add(c orphan) {
	switch {
	case !c.staged.IsZero():
		if d.s.shards.DiscardIfSame(c.id, c.staged) {
			d.n++
		}
	case c.badPart:
		if _, err := d.s.shards.DeleteIfSame(c.id.Blob, c.id.Index, nil, c.file); err != nil {
			d.s.log.Warn("delete orphan part file", "blob_id", c.id.Blob, "shard", c.id.Index, "err", err)
		}
	default:
		if c.id.Blob != d.part.Blob || c.id.Index != d.part.Index {
			d.flush()
		}
		d.part = shardstore.ID{Blob: c.id.Blob, Index: c.id.Index}
		d.blocks = append(d.blocks, c.id.Block)
		d.stamp = c.file
	}
}

// flush deletes the orphan blocks gathered of one part file.
func (d *orphanDeletes) flush() {
	if len(d.blocks) == 0 {
		return
	}
	deleted, err := d.s.shards.DeleteIfSame(d.part.Blob, d.part.Index, d.blocks, d.stamp)
	d.blocks = nil
	if err != nil {
		d.s.log.Warn("delete orphan shards", "blob_id", d.part.Blob, "shard", d.part.Index, "err", err)
		return
	}
	d.n += deleted
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

// anyBlock, as the block of a ShardRef in a Referenced request, asks
// about the blob as a whole: referenced while the blob exists or a put of
// it is pending, wherever the blob places its shards. An agent asks so
// about a part file whose header is bad (its blocks cannot be listed, or
// cannot be read now): the leader's blob may place on it any of its
// blocks, block 0 perhaps not, and a header unreadable for a moment says
// nothing about the blocks behind it; the file goes once the blob is
// gone. No blob has as many blocks.
//
// A ShardRef with anyBlock and no blob id is a probe, answered referenced
// by a leader that answers anyBlock. A leader of an older build answers
// it unreferenced, as every anyBlock question (no block has that
// number), and its answers about whole blobs count for nothing.
const anyBlock = math.MaxUint32

// referenced answers Referenced from this (the leader's) replica. A shard
// of a block that repair is storing on the asking agent counts as
// referenced too: the rebuilt shard is durable there before its holder is
// recorded, and its file may be older than the orphan grace (it was
// staged earlier), so deleting it in between would record a holder
// without its shard. An anyBlock question is about the blob as a whole.
func (s *Store) referenced(req *pb.ReferencedRequest) []bool {
	meta := s.cluster.Meta()
	out := make([]bool, len(req.Shards))
	for i, ref := range req.Shards {
		if ref.GetBlock() == anyBlock {
			blob := ref.GetBlobId()
			out[i] = blob == "" || meta.BlobByID(blob) != nil || meta.PendingBlob(blob) != nil
			continue
		}
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
	var unread unreadShards
	defer unread.warn(s)
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
				err := s.verifyOwn(ctx, id)
				if s.gaveUpOnDisk(ctx, "the scrubber stopped this pass", id, err) {
					return bad.n
				}
				err = s.mapReadErr(err)
				ref := &pb.ShardRef{BlobId: b.Id, Block: uint32(bi), Index: uint32(idx), Node: self}
				switch {
				case errors.Is(err, ErrCorrupt):
					bad.add(ref, false)
				case errors.Is(err, ErrNotFound) && behind != nil: // perhaps deleted since: not a loss to report
				case errors.Is(err, ErrNotFound) && referencedBy(meta, self, b.Id, uint32(bi), uint32(idx)):
					bad.add(ref, true) // still ours: not deleted or moved meanwhile
				case err != nil:
					unread.add(id, err)
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

// verifyOwn verifies shard id in this agent's files (shards.Verify),
// waited for within ShardTimeout and ctx, as readOwn reads (aside): a
// disk that hangs in reads would otherwise stop the scrubber for as long
// as it hangs. A verify waited for no longer goes on aside, counted
// among the calls stuck on the disk, and Close waits for it as for them.
func (s *Store) verifyOwn(ctx context.Context, id shardstore.ID) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShardTimeout)
	defer cancel()
	_, err := s.aside(ctx, errReadAbandoned, func() (int, error) { return 0, s.shards.Verify(id) }, nil)
	return err
}

// gaveUpOnDisk reports whether err, that of a read of shard (or part
// file) id made aside by a background pass over this agent's shards (the
// scrubber's, the check of what its files hold), ends the pass: the read
// was waited for no longer, or not started (the disk has too many stuck
// calls, or the store is closing). On a disk that hangs every later read
// would hang as well, so the pass stops, warning once (stopped says
// which pass), and leaves the rest to the scrubber's next pass.
func (s *Store) gaveUpOnDisk(ctx context.Context, stopped string, id shardstore.ID, err error) bool {
	switch {
	case errors.Is(err, errClosed) || (errors.Is(err, errReadAbandoned) && ctx.Err() != nil):
		return true // the agent is stopping
	case errors.Is(err, errReadAbandoned) || errors.As(err, new(*diskHungError)):
		s.log.Warn(stopped+": this agent's shard disk hangs in reads; the scrubber's next pass tries again after the scrub interval: "+
			"check that disk (dmesg, iostat), and restart the agent if it stays stuck",
			"dir", s.shards.Dir(), "shard", id.String(), "scrub_interval", s.cfg.ScrubInterval, "err", err)
		return true
	}
	return false
}

// unreadShards counts the shards a scrub pass could not read for another
// reason than what they hold (the shard directory's permissions changed,
// too many open files): they are neither verified nor reported for
// repair. A cause like that fails every shard alike, so the pass warns
// once, at its end, not once per shard.
type unreadShards struct {
	n     int
	first shardstore.ID
	err   error // first's
}

func (u *unreadShards) add(id shardstore.ID, err error) {
	if u.n++; u.err == nil {
		u.first, u.err = id, err
	}
}

// warn logs what the pass could not read, if anything.
func (u *unreadShards) warn(s *Store) {
	if u.n == 0 {
		return
	}
	s.metrics.scrubUnreadShards.Add(float64(u.n))
	s.log.Warn("the scrubber could not read shards this agent holds; they were not verified: check the shard directory (permissions, owner, open files) and the disk",
		"shards", u.n, "first_shard", u.first.String(), "err", u.err)
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
					var err error
					held, err = s.heldSums(ctx, b.Id, idx)
					if s.gaveUpOnDisk(ctx, "the check of the shards this agent holds stopped", shardstore.ID{Blob: b.Id, Index: uint16(idx)}, err) {
						return bad.n
					}
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
// part file cannot be read. The read is waited for within ShardTimeout
// and ctx (aside), as heldLocal's: an error is aside's, the read waited
// for no longer or not started.
func (s *Store) heldSums(ctx context.Context, blob string, index int) (map[uint32]uint32, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShardTimeout)
	defer cancel()
	var part shardstore.HeldPart
	_, err := s.aside(ctx, errReadAbandoned, func() (int, error) {
		var err error
		part, err = s.shards.Held(blob, uint16(index))
		return 0, err
	}, nil)
	switch {
	case errors.Is(err, shardstore.ErrNotFound):
		return map[uint32]uint32{}, nil
	case errors.Is(err, errReadAbandoned) || errors.Is(err, errClosed) || errors.As(err, new(*diskHungError)):
		return nil, err
	case err != nil:
		s.log.Warn("list the shards of a part file", "blob_id", blob, "shard", index, "err", err)
		return nil, nil
	}
	out := make(map[uint32]uint32, len(part.Blocks))
	for i, b := range part.Blocks {
		out[b] = part.Sums[i]
	}
	return out, nil
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
