package shardstore

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// stagedPart is a part file being written: a temporary file next to its
// final name, its blocks written at their offsets without fsync.
type stagedPart struct {
	hdr  partHeader
	path string // final name
	tmp  string

	mu     sync.Mutex
	f      *os.File
	size   int64                // the file's extent, as reserved in Usage
	blocks map[uint32]time.Time // block -> when staged
	// listed guards size and blocks for Staged and StagedSize, which
	// read them without mu: mu is held through a write's disk calls, and
	// a disk hung in one would hold the orphan collector's listing and
	// every sync's bound. size and blocks change, once a write has ended,
	// under mu and listed both; listed is never held across a disk call.
	listed sync.Mutex
	gone   bool // committed or dropped
	// synced: fsynced whole after it was sealed (presync); its rename
	// needs no fsync.
	synced bool
	// sealed: taken out of the staged set to be committed; a shard
	// staged now goes into a new part (stage retries), so that a commit
	// makes durable exactly the shards it took. It is set without mu
	// (seal): taking a part must not wait for a write into it, which
	// holds mu through its disk calls, while holding stagedMu. A write
	// under way then ends before the commit takes mu, and is committed
	// with the part.
	sealed atomic.Bool
	// unflushed counts the bytes written since the part's writeback was
	// last started (writeback.go).
	unflushed int64
	// dw gathers the part's bytes for O_DIRECT writes until the part is
	// settled (direct.go).
	dw directWriter
	// fault is Options.WriteFault's error for a write of the file.
	fault func() error
	// lost is set once a write of gathered bytes failed: the shards they
	// held were answered as staged but are not in the file, so the part
	// can only be dropped; every later add and its commit fail with it.
	lost error
}

// StagedShard is a shard written by Stage and not yet committed.
type StagedShard struct {
	ID ID
	At time.Time
}

// newStaged creates the temporary part file for hdr.
func (s *Store) newStaged(hdr partHeader) (*stagedPart, error) {
	if err := hdr.check(); err != nil {
		return nil, err
	}
	path := s.Path(ID{Blob: hdr.Blob, Index: hdr.Index})
	dir := filepath.Dir(path)
	if err := s.ensureDir(dir); err != nil {
		return nil, err
	}
	if err := s.reserve(ID{Blob: hdr.Blob, Index: hdr.Index}, PartHeaderSize, 0); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*"+tmpSuffix)
	if err == nil {
		if err = s.injected("write", f.Name()); err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}
	if err != nil {
		s.release(PartHeaderSize, 0)
		return nil, err
	}
	var b [PartHeaderSize]byte
	hdr.marshal(b[:])
	sp := &stagedPart{hdr: hdr, path: path, tmp: f.Name(), f: f, size: PartHeaderSize, blocks: make(map[uint32]time.Time),
		fault: func() error { return s.injected("write", f.Name()) }}
	if !sp.startDirect(b[:]) {
		if _, err := f.WriteAt(b[:], 0); err != nil {
			f.Close()
			os.Remove(f.Name())
			s.release(PartHeaderSize, 0)
			return nil, err
		}
	}
	return sp, nil
}

// add writes a shard, its payload in pieces, into the staged part at its
// block's offset.
func (sp *stagedPart) add(s *Store, h *Header, pieces [][]byte) error {
	if p := partOf(h); p != sp.hdr {
		return fmt.Errorf("shardstore: stage %s: scheme %d+%d, block size %d; the blob's other shards of index %d have %d+%d, %d: %w",
			h.ID, h.K, h.M, h.BlockSize, h.ID.Index, sp.hdr.K, sp.hdr.M, sp.hdr.BlockSize, ErrInvalidHeader)
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.sealed.Load() {
		return errSealed
	}
	if sp.gone {
		return fmt.Errorf("shardstore: stage %s: the blob's staged shards were committed or discarded meanwhile: %w", h.ID, ErrNotFound)
	}
	if sp.lost != nil {
		return wrapWrite("stage", h.ID, sp.lost)
	}
	end := sp.hdr.offset(h.ID.Block) + frameHeaderSize + int64(h.ShardLen)
	grow := max(end-sp.size, 0)
	_, had := sp.blocks[h.ID.Block]
	dShards := 1
	if had {
		dShards = 0
	}
	if err := s.reserve(h.ID, grow, dShards); err != nil {
		return err
	}
	err := s.injected("write", sp.tmp)
	buffered := false
	if err == nil {
		buffered, err = sp.writeFrame(h, pieces)
	}
	if err != nil {
		s.release(grow, dShards)
		if had && buffered { // its slot was written over: the shard staged there before is gone
			sp.unlist(h.ID.Block)
			s.release(0, 1)
		}
		return wrapWrite("stage", h.ID, err)
	}
	sp.listed.Lock()
	sp.size += grow
	sp.blocks[h.ID.Block] = time.Now()
	sp.listed.Unlock()
	if !buffered {
		return nil
	}
	if sp.unflushed += frameHeaderSize + int64(h.ShardLen); sp.unflushed >= writebackBytes {
		startWriteback(sp.f)
		sp.unflushed -= writebackBytes
	}
	return nil
}

// writeFrame writes h's frame into the staged part: gathered for a direct
// write when it follows the gathered bytes (direct.go), else through the
// page cache once the part is settled; buffered says which.
func (sp *stagedPart) writeFrame(h *Header, pieces [][]byte) (buffered bool, err error) {
	if sp.follows(sp.hdr.offset(h.ID.Block)) {
		return false, sp.gather(append([][]byte{frameHeader(h)}, pieces...))
	}
	if err := sp.settle(); err != nil {
		return true, err
	}
	if err := writeFramePieces(sp.f, &sp.hdr, h, pieces); err != nil {
		sp.undoFrame(h.ID.Block, err)
		return true, err
	}
	return true, nil
}

// undoFrame makes block's slot, whose frame a write failed to write
// (err), perhaps partway (a disk that filled mid-write), a hole again
// within the part's extent: a frame header left there would be committed
// with the part, a corrupt block that the usage does not count and Open
// does. When that fails too, the part is lost (sp.lost). sp's lock is
// held.
func (sp *stagedPart) undoFrame(block uint32, err error) {
	info, uerr := sp.f.Stat()
	if uerr == nil && info.Size() > sp.size {
		uerr = sp.f.Truncate(sp.size)
	}
	if uerr == nil && sp.hdr.offset(block) < sp.size {
		uerr = clearFrame(sp.f, &sp.hdr, block)
	}
	if uerr != nil {
		sp.lost = fmt.Errorf("staged part %s: %w: the shards staged in it are lost (a shard's frame, partly written, could not be undone: %v)", sp.path, err, uerr)
	}
}

// drop removes the staged part and gives back its space.
func (sp *stagedPart) drop(s *Store) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.gone {
		return
	}
	sp.gone = true
	sp.dropDirect()
	sp.f.Close()
	os.Remove(sp.tmp)
	s.release(sp.size, len(sp.blocks))
}

// Stage writes a shard of a put in progress into its index's temporary
// part file, at its block's offset, without fsync. A put stages all its
// shards and then makes them durable and visible together with
// CommitStaged: one fsync and one rename per part file. A staged shard is
// not readable (Get, Stat, Verify and Walk do not see it) until it is
// committed; Discard, DeleteBlob or, after a crash, Open remove it. It
// counts in Usage from the moment it is staged.
func (s *Store) Stage(h Header, payload []byte) error {
	return s.StagePieces(h, [][]byte{payload})
}

// StagePieces is Stage of a payload in pieces (the HTTP/2 frames it
// arrived in): its checksum is computed over the pieces and they are
// written with the frame's header in one call, never copied into one
// buffer.
func (s *Store) StagePieces(h Header, pieces [][]byte) error {
	if err := checkPutPieces(&h, pieces); err != nil {
		return err
	}
	return s.stage(h, pieces)
}

// StageSummed is Stage of a payload whose h.Sum its caller has just
// computed from these very bytes in memory (the agent's own encoder, or
// repair's rebuild): the checksum is trusted, not computed again. A
// payload that crossed a network or a disk goes through Stage.
func (s *Store) StageSummed(h Header, payload []byte) error {
	if err := checkPutHeader(&h, len(payload)); err != nil {
		return err
	}
	return s.stage(h, [][]byte{payload})
}

// errSealed: the staged part was taken to be committed; the shard goes
// into a new one.
var errSealed = errors.New("staged part taken for commit")

// stage writes a checked shard whose payload is pieces.
func (s *Store) stage(h Header, pieces [][]byte) error {
	unlock := s.rlockBlob(h.ID.Blob)
	defer unlock()
	for {
		// A part is sealed between being looked up here and written to
		// only when a commit takes it meanwhile; the next lookup does not
		// find it.
		if err := s.stageOnce(&h, pieces); !errors.Is(err, errSealed) {
			return err
		}
	}
}

// stageOnce writes the shard into its index's staged part, creating the
// part when there is none; the blob lock is held shared.
func (s *Store) stageOnce(h *Header, pieces [][]byte) error {
	s.stagedMu.Lock()
	sp := s.staged[h.ID.Blob][h.ID.Index]
	s.stagedMu.Unlock()
	if sp == nil {
		// Created outside the lock (it may fsync directories); the first
		// of concurrent creators wins.
		created, err := s.newStaged(partOf(h))
		if err != nil {
			return wrapWrite("stage", h.ID, err)
		}
		s.stagedMu.Lock()
		if sp = s.staged[h.ID.Blob][h.ID.Index]; sp == nil {
			if s.staged[h.ID.Blob] == nil {
				s.staged[h.ID.Blob] = make(map[uint16]*stagedPart)
			}
			s.staged[h.ID.Blob][h.ID.Index] = created
			sp = created
		}
		s.stagedMu.Unlock()
		if sp != created {
			created.drop(s)
		}
	}
	err := sp.add(s, h, pieces)
	if err != nil && !errors.Is(err, errSealed) {
		s.dropIfEmpty(h.ID.Blob, h.ID.Index, sp)
	}
	return err
}

// dropIfEmpty drops sp, the staged part of (blob, index), when it holds
// no shard (its first one was refused: no room under MaxBytes, a full
// disk): no commit, discard or orphan collection would ever come for it,
// and it would keep its temporary file, descriptors and chunk buffer. A
// Stage waiting to write into it finds it sealed and writes into a new
// part.
func (s *Store) dropIfEmpty(blob string, index uint16, sp *stagedPart) {
	sp.mu.Lock()
	s.stagedMu.Lock()
	empty := len(sp.blocks) == 0 && !sp.sealed.Load() && !sp.gone && s.staged[blob][index] == sp
	if empty {
		s.unstageLocked(blob, index)
		sp.seal()
	}
	s.stagedMu.Unlock()
	sp.mu.Unlock()
	if empty {
		sp.drop(s)
	}
}

// CommitStaged makes every staged shard of blob durable and readable:
// each staged part file is fsynced and renamed into place (or, when the
// part file exists, its staged blocks are written into it in place and it
// is fsynced), all parts at once, then the blob's directory is fsynced
// once. It returns how many shards it committed. On an error the blob's
// staged shards that were not committed are removed.
//
// The fsyncs run outside the blob lock and the part lock (commitPart):
// a disk hung in fsync would otherwise hold the deletes of the blob, and
// the writes of every part file under the same (striped) part lock, and,
// as a waiting writer holds off new readers of an RWMutex, their reads
// too. A DeleteBlob of this blob
// while it commits removes the staged part files: the commit then fails
// (renameStaged) and leaves nothing of the blob.
func (s *Store) CommitStaged(blob string) (int, error) {
	if err := checkBlob(blob); err != nil {
		return 0, err
	}
	unlock := s.rlockBlob(blob) // a DeleteBlob before it discards what it would take
	s.stagedMu.Lock()
	parts := slices.Collect(maps.Values(s.staged[blob]))
	delete(s.staged, blob)
	for _, sp := range parts {
		sp.seal()
	}
	s.stagedMu.Unlock()
	unlock()
	return s.commitParts(blob, parts)
}

// CommitStagedShards is CommitStaged of the listed shards of blob only
// (a repair batch's own): the blob's other staged shards, another
// writer's, stay staged. It returns how many of ids were staged and are
// now durable; an id not staged (discarded, or lost in a restart) is not
// counted. On an error none of ids counts as durable, and those not
// committed are removed.
func (s *Store) CommitStagedShards(blob string, ids []ID) (int, error) {
	if err := checkBlob(blob); err != nil {
		return 0, err
	}
	byIndex := make(map[uint16]map[uint32]bool)
	for _, id := range ids {
		if id.Blob != blob {
			return 0, fmt.Errorf("shardstore: commit staged shards of %s: shard %s is of another blob: %w", blob, id, ErrInvalidID)
		}
		if byIndex[id.Index] == nil {
			byIndex[id.Index] = make(map[uint32]bool)
		}
		byIndex[id.Index][id.Block] = true
	}
	parts, errs := s.takeBlocksOf(blob, byIndex)
	n, err := s.commitParts(blob, parts) // outside the blob lock, as CommitStaged
	if err := errors.Join(append(errs, err)...); err != nil {
		return n, fmt.Errorf("shardstore: commit staged shards of %s: %w", blob, err)
	}
	return n, nil
}

// takeBlocksOf takes the blocks byIndex of blob's staged parts out of
// the staged set (takeBlocks), under the blob lock shared, and returns
// the parts to commit and the errors of those it could not take.
func (s *Store) takeBlocksOf(blob string, byIndex map[uint16]map[uint32]bool) (parts []*stagedPart, errs []error) {
	unlock := s.rlockBlob(blob)
	defer unlock()
	for index, blocks := range byIndex {
		sp, err := s.takeBlocks(blob, index, blocks)
		if err != nil {
			errs = append(errs, err)
		}
		if sp != nil {
			parts = append(parts, sp)
		}
	}
	return parts, errs
}

// takeBlocks takes blocks of the staged part of (blob, index) out of the
// staged set, for commitPart: the whole part when it holds no other
// block, else a new staged part the blocks are moved into. It returns
// nil when none of blocks is staged. On an error the blocks not moved are
// discarded. The blob lock is held shared.
//
// sp's lock is waited for outside stagedMu (a write into sp that hangs on
// the disk holds it, and would otherwise hold every stage of the store),
// and stagedMu taken under it, as everywhere.
func (s *Store) takeBlocks(blob string, index uint16, blocks map[uint32]bool) (*stagedPart, error) {
	s.stagedMu.Lock()
	sp := s.staged[blob][index]
	s.stagedMu.Unlock()
	if sp == nil {
		return nil, nil
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	s.stagedMu.Lock()
	if s.staged[blob][index] != sp { // taken meanwhile by a commit or a discard
		s.stagedMu.Unlock()
		return nil, nil
	}
	whole := true
	for b := range sp.blocks {
		whole = whole && blocks[b]
	}
	if whole {
		s.unstageLocked(blob, index)
		sp.seal()
		s.stagedMu.Unlock()
		return sp, nil
	}
	s.stagedMu.Unlock()
	return s.moveBlocks(sp, blocks)
}

// moveBlocks moves the blocks of sp that are in blocks into a new staged
// part, not in the staged set, and returns it (nil when sp has none of
// them); sp's lock is held. On an error the blocks not moved are
// discarded and the new part dropped.
func (s *Store) moveBlocks(sp *stagedPart, blocks map[uint32]bool) (*stagedPart, error) {
	if err := sp.settle(); err != nil {
		return nil, fmt.Errorf("part %s: move staged shards: %w", sp.path, err)
	}
	src := &partFile{f: sp.f, path: sp.tmp, hdr: sp.hdr, size: sp.size}
	var moved *stagedPart
	var buf []byte
	var err error
	for _, b := range slices.Sorted(maps.Keys(blocks)) {
		if _, ok := sp.blocks[b]; !ok {
			continue
		}
		if err == nil {
			err = s.moveBlock(sp, src, b, &moved, &buf)
		}
		if cerr := clearFrame(sp.f, &sp.hdr, b); cerr != nil {
			s.log.Warn("clear moved staged shard", "part", sp.tmp, "block", b, "err", cerr)
		}
		sp.unlist(b)
		s.release(0, 1)
	}
	if err != nil {
		if moved != nil {
			moved.drop(s)
		}
		return nil, fmt.Errorf("part %s: move staged shards: %w", sp.path, err)
	}
	return moved, nil
}

// moveBlock copies block b of the staged part read through src into
// *moved, creating that part first when it is nil.
func (s *Store) moveBlock(sp *stagedPart, src *partFile, b uint32, moved **stagedPart, buf *[]byte) error {
	h, payload, err := src.read(b, *buf)
	if err != nil {
		return err
	}
	*buf = payload
	if *moved == nil {
		if *moved, err = s.newStaged(sp.hdr); err != nil {
			return err
		}
	}
	return (*moved).add(s, &h, [][]byte{payload})
}

// commitParts commits staged parts of blob taken out of the staged set,
// all at once, then fsyncs the blob's directory, and returns how many
// shards they held. The blob lock is not held: commitPart takes it.
func (s *Store) commitParts(blob string, parts []*stagedPart) (int, error) {
	if len(parts) == 0 {
		return 0, nil
	}
	counts := make([]int, len(parts))
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, sp := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			counts[i], errs[i] = s.commitPart(sp)
		}()
	}
	wg.Wait()
	n := 0
	for _, c := range counts {
		n += c
	}
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("shardstore: commit staged shards of %s: %w", blob, err)
	}
	if err := s.syncBlobDir(blob); err != nil {
		return n, fmt.Errorf("shardstore: commit staged shards of %s: %w", blob, noSpace(err))
	}
	return n, nil
}

// CommitStagedPart is CommitStaged for the staged shards of one shard
// index of blob only: one fsync and one rename (or an in-place merge into
// the existing part file), then the blob's directory is fsynced. It
// returns how many shards it committed; on an error they are removed.
// As in CommitStaged, the fsyncs run outside the blob lock.
func (s *Store) CommitStagedPart(blob string, index uint16) (int, error) {
	if err := checkBlob(blob); err != nil {
		return 0, err
	}
	unlock := s.rlockBlob(blob)
	sp := s.takeStaged(blob, index)
	unlock()
	if sp == nil {
		return 0, nil
	}
	n, err := s.commitPart(sp)
	if err == nil && n > 0 {
		err = s.syncBlobDir(blob)
	}
	if err != nil {
		return n, fmt.Errorf("shardstore: commit staged shards of %s index %d: %w", blob, index, noSpace(err))
	}
	return n, nil
}

// DiscardStagedPart removes the staged shards of one shard index of blob.
func (s *Store) DiscardStagedPart(blob string, index uint16) {
	sp := s.takeStaged(blob, index)
	if sp == nil {
		return
	}
	sp.drop(s)
	// The directory goes when this was its last file; the blob lock keeps
	// a concurrent Stage from creating a file in it meanwhile.
	unlock := s.lockBlob(blob)
	_ = os.Remove(filepath.Dir(sp.tmp))
	unlock()
}

// takeStaged removes the staged part of (blob, index) from the staged
// set, sealed, and returns it, or nil.
func (s *Store) takeStaged(blob string, index uint16) *stagedPart {
	s.stagedMu.Lock()
	defer s.stagedMu.Unlock()
	sp := s.staged[blob][index]
	if sp == nil {
		return nil
	}
	s.unstageLocked(blob, index)
	sp.seal()
	return sp
}

// unstageLocked removes the staged part of (blob, index) from the staged
// set; stagedMu is held.
func (s *Store) unstageLocked(blob string, index uint16) {
	delete(s.staged[blob], index)
	if len(s.staged[blob]) == 0 {
		delete(s.staged, blob)
	}
}

// unlist takes block out of sp's staged blocks; sp's lock is held.
func (sp *stagedPart) unlist(block uint32) {
	sp.listed.Lock()
	delete(sp.blocks, block)
	sp.listed.Unlock()
}

// seal marks a part taken out of the staged set: add refuses it. It does
// not wait for sp's lock (sealed).
func (sp *stagedPart) seal() { sp.sealed.Store(true) }

// Staged lists the shards staged and not committed, for orphan
// collection. It does not wait for a write into a staged part (a disk
// hung in one): a shard being written is listed once its write ends.
func (s *Store) Staged() []StagedShard {
	s.stagedMu.Lock()
	parts := make([]*stagedPart, 0, len(s.staged))
	for _, byIndex := range s.staged {
		for _, sp := range byIndex {
			parts = append(parts, sp)
		}
	}
	s.stagedMu.Unlock()
	var out []StagedShard
	for _, sp := range parts {
		sp.listed.Lock()
		for b, at := range sp.blocks {
			out = append(out, StagedShard{ID: ID{Blob: sp.hdr.Blob, Block: b, Index: sp.hdr.Index}, At: at})
		}
		sp.listed.Unlock()
	}
	return out
}

// StagedSize is the bytes of the staged part files of blob: what
// CommitStaged of it makes durable, at most. As Staged, it does not wait
// for a write into a staged part.
func (s *Store) StagedSize(blob string) int64 {
	s.stagedMu.Lock()
	parts := slices.Collect(maps.Values(s.staged[blob]))
	s.stagedMu.Unlock()
	var size int64
	for _, sp := range parts {
		sp.listed.Lock()
		size += sp.size
		sp.listed.Unlock()
	}
	return size
}

// Discard removes a staged shard; it is a no-op when id is not staged.
func (s *Store) Discard(id ID) { s.discard(id, time.Time{}) }

// DiscardIfSame removes a staged shard only if it is the one staged at at
// (as Staged listed it), not one staged again since, and reports whether
// it did.
func (s *Store) DiscardIfSame(id ID, at time.Time) bool { return s.discard(id, at) }

// discard removes staged shard id (its slot in the staged part becomes a
// hole, the part goes with its last shard); a non-zero at must match its
// staging time.
func (s *Store) discard(id ID, at time.Time) bool {
	s.stagedMu.Lock()
	sp := s.staged[id.Blob][id.Index]
	s.stagedMu.Unlock()
	if sp == nil {
		return false
	}
	sp.mu.Lock()
	when, ok := sp.blocks[id.Block]
	ok = ok && !sp.gone && (at.IsZero() || when.Equal(at))
	if ok {
		if err := sp.settle(); err != nil {
			s.log.Warn("discard staged shard", "shard", id, "err", err)
		}
		if err := clearFrame(sp.f, &sp.hdr, id.Block); err != nil {
			s.log.Warn("discard staged shard", "shard", id, "err", err)
		}
		sp.unlist(id.Block)
		s.release(0, 1)
	}
	empty := len(sp.blocks) == 0
	sp.mu.Unlock()
	if ok && empty {
		s.stagedMu.Lock()
		if s.staged[id.Blob][id.Index] == sp {
			delete(s.staged[id.Blob], id.Index)
			if len(s.staged[id.Blob]) == 0 {
				delete(s.staged, id.Blob)
			}
		}
		s.stagedMu.Unlock()
		sp.drop(s)
		_ = os.Remove(filepath.Dir(sp.tmp)) // only when empty
	}
	return ok
}

// discardStaged removes every staged shard of blob.
func (s *Store) discardStaged(blob string) {
	s.stagedMu.Lock()
	parts := s.staged[blob]
	delete(s.staged, blob)
	s.stagedMu.Unlock()
	for _, sp := range parts {
		sp.drop(s)
	}
}
