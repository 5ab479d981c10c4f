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
//
// Its calls of the disk (the walks, the deletes and discards) are waited
// for within ShardTimeout (passAside): one given up on, the disk
// hanging, ends the pass, warning once (gaveUpOnDisk), and the next pass
// tries again. A call given up on goes on aside and may still end: each
// deletes only what it was given (a file unchanged since the walk, a
// shard staged at the time listed), so it is right whenever it ends.
func (s *Store) CollectOrphans(ctx context.Context, now time.Time) int {
	if s.passHeldOff("orphan collection") {
		return 0
	}
	cands, err := s.orphanCandidates(ctx, now)
	if s.gaveUpOnDisk(ctx, "orphan collection stopped this pass", s.collectRetry(), shardstore.ID{}, err) {
		return 0
	}
	del := orphanDeletes{s: s, ctx: ctx}
	var (
		kept, notAsked, failed, inARow int
		why                            error
	)
	for chunk := range slices.Chunk(cands, maxReferencedShards) {
		if del.stopped {
			break
		}
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
	if del.stopped {
		s.metrics.shardsCollected.Add(float64(del.n))
		return del.n
	}
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
// blocks of one part file one after the other. An error is walkAside's:
// the walk waited for no longer or not started (the disk hangs, or the
// store is closing); what it found is then not used.
func (s *Store) orphanCandidates(ctx context.Context, now time.Time) ([]orphan, error) {
	meta := s.cluster.Meta()
	self := s.cluster.Self()
	// Each candidate keeps what it was when judged: only that file (or
	// staged shard) is deleted, never one stored under its name since.
	// The walk gathers into lists of its own, handed over only when it
	// ends in time: one given up on goes on aside.
	var files, bad []orphan
	err := s.walkAside(ctx, func(progress func() error) error {
		var stamped, badParts []orphan
		err := s.shards.WalkParts(shardstore.PartWalk{
			Stamped: func(id shardstore.ID, st shardstore.Stamp) error {
				if now.Sub(st.Mod()) >= s.cfg.OrphanGrace && !referencedBy(meta, self, id.Blob, id.Block, uint32(id.Index)) {
					stamped = append(stamped, orphan{id: id, file: st})
				}
				return nil
			},
			// A part file with a bad header lists no shards (its header
			// fails its check, or cannot be read now); while the blob
			// exists, repair replaces it. One of a blob this replica
			// lacks is a candidate as a whole: the leader is asked about
			// the blob, not about a block.
			Bad: func(blob string, index uint16, st shardstore.Stamp) error {
				if now.Sub(st.Mod()) >= s.cfg.OrphanGrace && meta.BlobByID(blob) == nil && meta.PendingBlob(blob) == nil {
					badParts = append(badParts, orphan{id: shardstore.ID{Blob: blob, Index: index}, file: st, badPart: true})
				}
				return nil
			},
			Done: progress,
		})
		files, bad = stamped, badParts
		return err
	})
	if asideErr(err) {
		return nil, err
	}
	if err != nil {
		s.log.Warn("walk shards for orphans", "err", err)
	}
	cands := files
	for _, st := range s.shards.Staged() {
		if now.Sub(st.At) >= s.cfg.OrphanGrace && !referencedBy(meta, self, st.ID.Blob, st.ID.Block, uint32(st.ID.Index)) {
			cands = append(cands, orphan{id: st.ID, staged: st.At})
		}
	}
	return append(cands, bad...), nil
}

// walkAside runs walk, a walk of this agent's shard directory, aside as
// passAside runs a call, and waits for it until ctx ends or ShardTimeout
// passes without progress (walk calls progress after each part file): a
// walk of a large store takes longer than ShardTimeout on a disk that
// answers, a walk on a hung disk makes none. A walk waited for no longer
// fails with errReadAbandoned and goes on aside, counted among the calls
// stuck on the disk, until it ends or gets past its part file (progress
// then fails, which is to stop it).
func (s *Store) walkAside(ctx context.Context, walk func(progress func() error) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idle := time.AfterFunc(s.cfg.ShardTimeout, func() { cancel(errWalkIdle) })
	defer idle.Stop()
	progress := func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		idle.Reset(s.cfg.ShardTimeout)
		return nil
	}
	_, err := s.asideInPass(ctx, errReadAbandoned, func() (int, error) { return 0, walk(progress) })
	switch {
	case err == nil || ctx.Err() == nil:
		return err // the walk ended in time
	case errors.Is(context.Cause(ctx), errWalkIdle):
		s.metrics.abandonedDiskWait(errReadAbandoned) // aside counts deadlines only
		return fmt.Errorf("%w: %w (%s)", errReadAbandoned, errWalkIdle, s.cfg.ShardTimeout)
	case !errors.Is(err, errReadAbandoned): // stopped by progress as ctx ended: what it found is partial
		return fmt.Errorf("%w: %w", errReadAbandoned, err)
	}
	return err
}

// errWalkIdle: a walk of the shard directory did not get past a part
// file within ShardTimeout.
var errWalkIdle = errors.New("the walk of the shard directory made no progress within the shard timeout")

// passAside runs call, a call of this agent's shard store by a
// background pass over its shards (the scrubber's, the check of what its
// files hold, orphan collection), aside and waits for it within
// ShardTimeout and ctx: a disk that hangs, or a stage hung in a write
// holding the staged part a discard needs, would otherwise stop the pass
// for as long as it hangs, and Close with it. A call waited for no longer
// fails with abandoned and goes on aside, counted among the calls stuck
// on the disk; Close waits for it as for them.
func (s *Store) passAside(ctx context.Context, abandoned error, call func() (int, error)) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShardTimeout)
	defer cancel()
	_, err := s.asideInPass(ctx, abandoned, call)
	return err
}

// asideInPass is aside for a call of a background pass: one it gives up
// on is counted in passStuck until it ends.
func (s *Store) asideInPass(ctx context.Context, abandoned error, call func() (int, error)) (int, error) {
	n, err := s.aside(ctx, abandoned, call, func(int, error) { s.passStuck.Add(-1) })
	if errors.Is(err, abandoned) {
		s.passStuck.Add(1)
	}
	return n, err
}

// passHeldOff reports whether a background pass over the shards should
// not start: a call an earlier one gave up on has not ended (the disk
// still hangs), and each pass would leave one more stuck, until the
// agent's stuck calls reach maxStuckDiskCalls and every disk call of
// its requests is refused. The pass that gave up warned.
func (s *Store) passHeldOff(pass string) bool {
	n := s.passStuck.Load()
	if n <= 0 {
		return false
	}
	s.log.Debug(pass+" skipped: a call of an earlier pass is still stuck on the disk", "dir", s.shards.Dir(), "stuck", n)
	return true
}

// asideErr reports whether err is aside's own: the call was waited for
// no longer, or not started (the disk has too many stuck calls, or the
// store is closing).
func asideErr(err error) bool {
	return errors.Is(err, errReadAbandoned) || errors.Is(err, errDeleteAbandoned) || errors.Is(err, errClosed) ||
		errors.As(err, new(*diskHungError))
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
// would wait for another pass and another OrphanGrace. Each delete is
// waited for within ShardTimeout (passAside); once one is given up
// on, stopped is set and nothing more is deleted this pass.
type orphanDeletes struct {
	s       *Store
	ctx     context.Context
	n       int           // shards deleted
	part    shardstore.ID // the part file of blocks (its Blob and Index)
	blocks  []uint32      // confirmed orphan blocks of part
	stamp   shardstore.Stamp
	stopped bool // a delete was given up on: the pass ends
}

// add deletes c, or keeps it for its part file's step.
func (d *orphanDeletes) add(c orphan) {
	if d.stopped {
		return
	}
	switch {
	case !c.staged.IsZero():
		var discarded bool
		err := d.s.passAside(d.ctx, errDeleteAbandoned, func() (int, error) {
			discarded = d.s.shards.DiscardIfSame(c.id, c.staged)
			return 0, nil
		})
		if d.gaveUp(c.id, err) {
			return
		}
		if discarded {
			d.n++
		}
	case c.badPart:
		err := d.s.passAside(d.ctx, errDeleteAbandoned, func() (int, error) {
			return d.s.shards.DeleteIfSame(c.id.Blob, c.id.Index, nil, c.file)
		})
		if d.gaveUp(c.id, err) {
			return
		}
		if err != nil {
			d.s.log.Warn("delete orphan part file", "blob_id", c.id.Blob, "shard", c.id.Index, "err", err)
		}
	default:
		if c.id.Blob != d.part.Blob || c.id.Index != d.part.Index {
			d.flush()
			if d.stopped {
				return
			}
		}
		d.part = shardstore.ID{Blob: c.id.Blob, Index: c.id.Index}
		d.blocks = append(d.blocks, c.id.Block)
		d.stamp = c.file
	}
}

// flush deletes the orphan blocks gathered of one part file.
func (d *orphanDeletes) flush() {
	if len(d.blocks) == 0 || d.stopped {
		return
	}
	// The delete may go on aside after the pass moved on: it is given
	// copies, not d's fields.
	part, blocks, stamp := d.part, d.blocks, d.stamp
	d.blocks = nil
	var deleted int
	err := d.s.passAside(d.ctx, errDeleteAbandoned, func() (int, error) {
		var err error
		deleted, err = d.s.shards.DeleteIfSame(part.Blob, part.Index, blocks, stamp)
		return 0, err
	})
	if d.gaveUp(part, err) {
		return
	}
	if err != nil {
		d.s.log.Warn("delete orphan shards", "blob_id", part.Blob, "shard", part.Index, "err", err)
		return
	}
	d.n += deleted
}

// gaveUp reports whether err, that of a delete of id made aside, ends the
// pass (gaveUpOnDisk), and sets stopped when it does.
func (d *orphanDeletes) gaveUp(id shardstore.ID, err error) bool {
	if d.s.gaveUpOnDisk(d.ctx, "orphan collection stopped this pass", d.s.collectRetry(), id, err) {
		d.stopped = true
	}
	return d.stopped
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
	if s.passHeldOff("the scrubber's pass") {
		return 0
	}
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
				if s.gaveUpOnDisk(ctx, "the scrubber stopped this pass", s.scrubRetry(), id, err) {
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
// waited for within ShardTimeout and ctx (passAside), as readOwn reads.
func (s *Store) verifyOwn(ctx context.Context, id shardstore.ID) error {
	return s.passAside(ctx, errReadAbandoned, func() (int, error) { return 0, s.shards.Verify(id) })
}

// gaveUpOnDisk reports whether err, that of a call of the shard store
// made aside by a background pass over this agent's shards (passAside),
// ends the pass: the call was waited for no longer, or not started (the
// disk has too many stuck calls, or the store is closing). On a disk that
// hangs every later call would hang as well, so the pass stops, warning
// once: stopped says which pass, retry when it is tried again
// (scrubRetry, collectRetry); id is the shard (or part file) of the call,
// none for a walk.
func (s *Store) gaveUpOnDisk(ctx context.Context, stopped, retry string, id shardstore.ID, err error) bool {
	if !asideErr(err) {
		return false
	}
	abandoned := errors.Is(err, errReadAbandoned) || errors.Is(err, errDeleteAbandoned)
	if errors.Is(err, errClosed) || (abandoned && ctx.Err() != nil) {
		return true // the agent is stopping
	}
	attrs := []any{"dir", s.shards.Dir(), "err", err}
	if id.Blob != "" {
		attrs = append(attrs, "shard", id.String())
	}
	s.log.Warn(stopped+": this agent's shard disk hangs; "+retry+": check that disk (dmesg, iostat), and restart the agent if it stays stuck", attrs...)
	return true
}

// scrubRetry says when the shards a scrub pass, or the check of what the
// files hold, gave up on are checked again: by the scrubber's next pass,
// or, with scrubbing off, not before the agent restarts.
func (s *Store) scrubRetry() string {
	if s.cfg.ScrubRate <= 0 {
		return "scrubbing is off (blob_scrub_rate 0), so no later pass checks this agent's shards until it restarts; reads of them report what they find"
	}
	return fmt.Sprintf("the scrubber's next pass tries again in %s (blob_scrub_interval)", s.cfg.ScrubInterval)
}

// collectRetry says when an orphan collection pass that gave up is tried
// again.
func (s *Store) collectRetry() string {
	return fmt.Sprintf("the next orphan collection pass tries again in %s (blob_gc_interval)", s.cfg.GCInterval)
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
	if s.passHeldOff("the check of the shards this agent holds") {
		return 0
	}
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
					if s.gaveUpOnDisk(ctx, "the check of the shards this agent holds stopped", s.scrubRetry(), shardstore.ID{Blob: b.Id, Index: uint16(idx)}, err) {
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
// and ctx (passAside), as heldLocal's: an error is aside's, the read
// waited for no longer or not started.
func (s *Store) heldSums(ctx context.Context, blob string, index int) (map[uint32]uint32, error) {
	var part shardstore.HeldPart
	err := s.passAside(ctx, errReadAbandoned, func() (int, error) {
		var err error
		part, err = s.shards.Held(blob, uint16(index))
		return 0, err
	})
	switch {
	case errors.Is(err, shardstore.ErrNotFound):
		return map[uint32]uint32{}, nil
	case asideErr(err):
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
