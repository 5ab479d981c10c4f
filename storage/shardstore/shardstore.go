// Package shardstore keeps the erasure-coded shards an agent holds: one
// part file per blob per shard index,
//
//	<dir>/<blob[0:2]>/<blob>/<index>.part
//
// holding that index's shard of every block of the blob the agent holds
// it for (part.go has the format). Each block's shard sits at a fixed
// offset behind its length and CRC32C, so a read seeks to the blocks it
// needs and checks each; a block that fails, or that the disk cannot read
// (EIO), is reported as ErrCorrupt naming the block (CorruptError), never
// returned as data, and the rest of the file stays readable.
//
// A put stages its shards: each index's shards are appended (written at
// their offsets, in any order, without fsync) to a temporary part file, and
// CommitStaged fsyncs each file once, renames it once and fsyncs the blob's
// directory once; nothing is visible before that, and temporary files left
// by a crash are removed by Open. When the part file exists already
// (repair rebuilding some of its blocks), the staged blocks are written
// into it in place and it is fsynced: the other blocks are left alone.
//
// Open converts shard files of the older layout, one file per shard per
// block (<block>.<index>.shard), into part files once, removing them only
// after the part file is durable.
//
// The package is the local disk only. It does not know which agent should
// hold which shard, does not encode (storage/codec) and does not repair:
// the storage package decides what to put, scrub and delete.
package shardstore

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/zrpcio/zrpc/internal/diskspace"
	"github.com/zrpcio/zrpc/storage/codec"
)

var (
	// ErrNotFound: no shard with that id is stored.
	ErrNotFound = errors.New("shard not found")
	// ErrCorrupt: a stored shard, or a payload given to Put, fails its
	// checks (header, id, length or checksum).
	ErrCorrupt = errors.New("corrupt shard")
	// ErrNoSpace: the shard does not fit under Options.MaxBytes, or the
	// file system is full.
	ErrNoSpace = errors.New("no space for shard")
	// ErrInvalidID: the blob id is not 16-64 lowercase hex digits.
	ErrInvalidID = errors.New("invalid shard id")
	// ErrInvalidHeader: a Header given to Put is inconsistent (scheme,
	// index, lengths), or disagrees with the part file it goes into.
	ErrInvalidHeader = errors.New("invalid shard header")
)

// Options configure a Store.
type Options struct {
	Logger   *slog.Logger // nil: discard
	MaxBytes int64        // bytes of part files (headers included) to hold at most; 0: unlimited
	// SyncDelay, when set, is called before every fsync of a part file
	// and the fsync waits as long as it returns: tests make a slow disk
	// with it. It may be called from several goroutines at once.
	SyncDelay func() time.Duration
	// WriteFault, when set, is called before every write and fsync of a
	// part file (a put's staging and commit, repair's rewrite in place),
	// before every fsync of a directory of the store and before a staged
	// part is created; an error it returns fails that step as the file
	// system's own would. Tests make a full or failing shard disk with it
	// (syscall.ENOSPC, syscall.EIO). It may be called from several
	// goroutines at once.
	WriteFault func() error
	// ReadFault, when set, is called before every read of a stored block
	// (Get, Stat, Verify, VerifyPart) and of its frame header alone (Held,
	// and the listings of Open, Walk and the deletes); an error it returns
	// fails that read as the disk's own would. Tests make unreadable
	// blocks with it (syscall.EIO: a bad sector). It may be called from
	// several goroutines at once.
	ReadFault func(ID) error
}

// Store is the shard directory of one agent. Its methods are safe for
// concurrent use. Writes to one part file are serialised, reads of it
// share; Delete and DeleteBlob exclude writes to the same blob.
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger

	mu        sync.Mutex // guards the usage counters
	bytes     int64
	shards    int
	badAtOpen int
	// partShards is how many of shards each part file holds: what a
	// file whose header went bad since it was counted gives back when it
	// is removed or replaced, its blocks being unlisted then.
	partShards map[partKey]int

	blobLocks blobLocks         // by blob: writes share, Delete/DeleteBlob own
	partLocks [256]sync.RWMutex // by part file: reads share, writes own

	stagedMu sync.Mutex
	staged   map[string]map[uint16]*stagedPart // by blob, by index: parts of puts, not yet committed
}

// Open opens (creating it if needed) the shard directory dir: it removes
// temporary files left by a crash, converts shard files of the older
// layout into part files, and reads every part file's header and frame
// headers to compute usage. A part file with a bad header is logged and
// counted (BadAtOpen); its blocks read as ErrCorrupt, so that the
// scrubber has them rebuilt. So does a block whose frame header the disk
// cannot read (EIO), logged with its file; the file's other blocks are
// counted and read as before.
func Open(dir string, opts Options) (*Store, error) {
	if dir == "" {
		return nil, errors.New("shardstore: open: empty directory name")
	}
	if opts.MaxBytes < 0 {
		return nil, fmt.Errorf("shardstore: open %s: MaxBytes %d is negative", dir, opts.MaxBytes)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("shardstore: open %s: %w", dir, err)
	}
	s := &Store{dir: dir, opts: opts, log: log, staged: make(map[string]map[uint16]*stagedPart), partShards: make(map[partKey]int)}
	if err := s.scan(); err != nil {
		return nil, err
	}
	s.log.Info("shard store opened", "dir", dir, "shards", s.shards, "bytes", s.bytes, "bad", s.badAtOpen)
	return s, nil
}

// scan removes temporary files, converts legacy shard files and counts
// the shards of every part file.
func (s *Store) scan() error {
	legacy := make(map[string][]string) // blob dir -> legacy shard files
	err := s.walk(walkFuncs{
		legacy: func(path, blob string) { legacy[blob] = append(legacy[blob], path) },
		temp: func(path string) {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.log.Warn("remove temporary shard file", "path", path, "err", err)
				return
			}
			s.log.Info("removed temporary shard file left by a crash", "path", path)
		},
		other: func(path string) { s.log.Warn("not a shard file; ignored", "path", path) },
	})
	if err != nil {
		return err
	}
	// Conversion reserves what it writes; the usage is counted afresh
	// below, and MaxBytes does not stop data already stored.
	maxBytes := s.opts.MaxBytes
	s.opts.MaxBytes = 0
	for blob, files := range legacy {
		if err := s.convert(blob, files); err != nil {
			return fmt.Errorf("shardstore: open %s: convert shard files of blob %s to part files: %w", s.dir, blob, err)
		}
	}
	s.opts.MaxBytes = maxBytes
	s.bytes, s.shards = 0, 0
	s.partShards = make(map[partKey]int)
	return s.walk(walkFuncs{part: func(path, blob string, index uint16, info fs.FileInfo) error {
		s.bytes += info.Size()
		pf, err := s.openStored(path, blob, index)
		if err != nil {
			s.badAtOpen++
			s.log.Warn("bad part file; its blocks read as corrupt until repaired", "path", path, "err", err)
			return nil
		}
		defer pf.close()
		held, unread, err := pf.heldFrames()
		if err != nil {
			s.log.Warn("could not list the blocks of a part file; they are left out of the shard count", "path", path, "err", err)
			return nil
		}
		s.warnUnread(path, unread)
		s.shards += len(held)
		s.partShards[partKey{blob, index}] += len(held)
		return nil
	}})
}

// warnUnread logs the blocks of the part file at path whose frame header
// the disk could not read (heldFrames), if there are any.
func (s *Store) warnUnread(path string, unread []*CorruptError) {
	if len(unread) == 0 {
		return
	}
	blocks := make([]uint32, len(unread))
	for i, ce := range unread {
		blocks[i] = ce.Block
	}
	s.log.Warn("the disk cannot read frame headers of a part file; those blocks read as corrupt until repair rewrites them, "+
		"but a disk that fails reads is failing: check it (dmesg, SMART)", "path", path, "blocks", blocks, "err", unread[0].Cause)
}

// openStored is openPart of a part file of the store, whose blocks it
// reads: Options.ReadFault applies to its reads.
func (s *Store) openStored(path, blob string, index uint16) (*partFile, error) {
	pf, err := openPart(path, blob, index)
	if err != nil {
		return nil, err
	}
	pf.readFault = s.opts.ReadFault
	return pf, nil
}

// Dir is the shard directory the store was opened on.
func (s *Store) Dir() string { return s.dir }

// Path is the part file holding shard id, or "" for an invalid id.
func (s *Store) Path(id ID) string {
	if !validBlob(id.Blob) {
		return ""
	}
	return filepath.Join(s.blobDir(id.Blob), partName(id.Index))
}

// PayloadOffset is where shard id's payload starts in its part file (Path),
// as that file's header places it.
func (s *Store) PayloadOffset(id ID) (int64, error) {
	if err := checkBlob(id.Blob); err != nil {
		return 0, err
	}
	pf, err := openPart(s.Path(id), id.Blob, id.Index)
	if err != nil {
		return 0, err
	}
	defer pf.close()
	return pf.hdr.offset(id.Block) + frameHeaderSize, nil
}

func (s *Store) blobDir(blob string) string {
	return filepath.Join(s.dir, blob[:2], blob)
}

// fnv1a is FNV-1a over the blob id and a shard index, for lock striping.
func fnv1a(blob string, index uint16) uint32 {
	h := uint32(2166136261)
	for i := range len(blob) {
		h = (h ^ uint32(blob[i])) * 16777619
	}
	for _, b := range [2]byte{byte(index), byte(index >> 8)} {
		h = (h ^ uint32(b)) * 16777619
	}
	return h
}

func (s *Store) partLock(blob string, index uint16) *sync.RWMutex {
	return &s.partLocks[fnv1a(blob, index)%uint32(len(s.partLocks))]
}

// Usage is the bytes of all part files (staged ones included, headers
// and holes too) and the number of shards (blocks) they hold.
func (s *Store) Usage() (bytes int64, shards int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes, s.shards
}

// Room is how many more bytes of part files the store can take: what
// MaxBytes leaves, or the free space of its file system if that is less.
func (s *Store) Room() (int64, error) {
	s.mu.Lock()
	room := int64(math.MaxInt64)
	if s.opts.MaxBytes > 0 {
		room = max(s.opts.MaxBytes-s.bytes, 0)
	}
	s.mu.Unlock()
	free, err := diskspace.Free(s.dir)
	if err != nil {
		return 0, fmt.Errorf("shardstore: free space: %w", err)
	}
	return min(room, int64(min(free, math.MaxInt64))), nil
}

// BadAtOpen is how many part files Open found with a bad header.
func (s *Store) BadAtOpen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.badAtOpen
}

// reserve adds delta bytes and dShards shards to the usage, or fails with
// ErrNoSpace when that would pass MaxBytes.
func (s *Store) reserve(id ID, delta int64, dShards int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opts.MaxBytes > 0 && delta > 0 && s.bytes+delta > s.opts.MaxBytes {
		return fmt.Errorf("shardstore: put %s: %d more bytes on %d of %d used: %w",
			id, delta, s.bytes, s.opts.MaxBytes, ErrNoSpace)
	}
	s.bytes += delta
	s.shards += dShards
	return nil
}

func (s *Store) release(delta int64, dShards int) {
	s.mu.Lock()
	s.bytes -= delta
	s.shards -= dShards
	s.mu.Unlock()
}

// partKey names a part file: shard index of blob.
type partKey struct {
	blob  string
	index uint16
}

// partChanged counts dBytes more bytes and dShards more shards in the
// part file of k.
func (s *Store) partChanged(k partKey, dBytes int64, dShards int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bytes += dBytes
	s.shards += dShards
	if s.partShards[k] += dShards; s.partShards[k] == 0 {
		delete(s.partShards, k)
	}
}

// partCommitted counts n shards, reserved while staged, as the part file
// of k's.
func (s *Store) partCommitted(k partKey, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.partShards[k] += n
}

// partGone gives back the size bytes of the part file of k, removed or
// replaced, and the shards it was counted with, and returns those.
func (s *Store) partGone(k partKey, size int64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.partShards[k]
	delete(s.partShards, k)
	s.bytes -= size
	s.shards -= n
	return n
}

// checkPut checks a shard given to Put or Stage, its payload against
// h.Sum too.
func checkPut(h *Header, payload []byte) error {
	return checkPutPieces(h, [][]byte{payload})
}

// checkPutPieces is checkPut of a payload in pieces.
func checkPutPieces(h *Header, pieces [][]byte) error {
	if err := checkPutHeader(h, codec.PiecesLen(pieces)); err != nil {
		return err
	}
	if sum := codec.ChecksumPieces(pieces); sum != h.Sum {
		return fmt.Errorf("shardstore: put %s: payload checksum %08x, header says %08x: %w", h.ID, sum, h.Sum, ErrCorrupt)
	}
	return nil
}

// checkPutHeader checks a shard's header against its payload's length.
func checkPutHeader(h *Header, payloadLen int) error {
	if err := h.check(); err != nil {
		return err
	}
	switch {
	case int64(h.ShardLen) != int64(payloadLen):
		return fmt.Errorf("shardstore: put %s: header says %d bytes, payload has %d: %w", h.ID, h.ShardLen, payloadLen, ErrInvalidHeader)
	case h.BlockLen == 0:
		return fmt.Errorf("shardstore: put %s: empty block: %w", h.ID, ErrInvalidHeader)
	case h.BlockSize < h.BlockLen:
		return fmt.Errorf("shardstore: put %s: block of %d bytes, block size %d (the blob's block size is needed and bounds every block): %w",
			h.ID, h.BlockLen, h.BlockSize, ErrInvalidHeader)
	}
	return nil
}

// Put stores a shard durably, replacing any shard with the same id
// (repair rewrites a corrupt one). When the part file exists, only that
// block's slot is written and the file fsynced; else a new part file is
// written, fsynced and renamed into place. h must be consistent
// (ErrInvalidID, ErrInvalidHeader), h.ShardLen must be len(payload) and
// h.Sum its CRC32C (ErrCorrupt otherwise). When it returns nil the shard
// is on disk and survives a crash; when it fails the other blocks of the
// part file are unchanged.
func (s *Store) Put(h Header, payload []byte) error {
	if err := checkPut(&h, payload); err != nil {
		return err
	}
	sp, err := s.stageAlone(&h, payload)
	if err != nil {
		return err
	}
	// Committed, and its directory fsynced, outside the blob lock, as
	// CommitStaged is.
	if _, err := s.commitPart(sp); err != nil {
		return wrapWrite("put", h.ID, err)
	}
	if err := s.syncBlobDir(h.ID.Blob); err != nil {
		return wrapWrite("put", h.ID, err)
	}
	return nil
}

// stageAlone writes a shard into a staged part of its own, not in the
// staged set, for Put to commit; the blob lock is held shared meanwhile.
func (s *Store) stageAlone(h *Header, payload []byte) (*stagedPart, error) {
	unlock := s.rlockBlob(h.ID.Blob)
	defer unlock()
	sp, err := s.newStaged(partOf(h))
	if err != nil {
		return nil, wrapWrite("put", h.ID, err)
	}
	if err := sp.add(s, h, [][]byte{payload}); err != nil {
		sp.drop(s)
		return nil, err
	}
	return sp, nil
}

// wrapWrite names the shard a write failed for, ENOSPC as ErrNoSpace.
func wrapWrite(op string, id ID, err error) error {
	return fmt.Errorf("shardstore: %s %s: %w", op, id, noSpace(err))
}

// noSpace marks a file system's ENOSPC as ErrNoSpace, for callers that
// tell a full disk from a failing one.
func noSpace(err error) error {
	if errors.Is(err, syscall.ENOSPC) && !errors.Is(err, ErrNoSpace) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// fsync flushes a part file to disk, after Options.SyncDelay.
func (s *Store) fsync(f *os.File) error {
	if s.opts.SyncDelay != nil {
		if d := s.opts.SyncDelay(); d > 0 {
			time.Sleep(d)
		}
	}
	if err := s.injected("sync", f.Name()); err != nil {
		return err
	}
	return f.Sync()
}

// injected is Options.WriteFault's error for the step op on path, if it
// has one, as the file system would report it.
func (s *Store) injected(op, path string) error {
	if s.opts.WriteFault == nil {
		return nil
	}
	if err := s.opts.WriteFault(); err != nil {
		return &os.PathError{Op: op, Path: path, Err: err}
	}
	return nil
}

// ensureDir creates a blob directory and makes its entry durable. When
// that fails the directory is removed again (unless a concurrent write put
// a file in it meanwhile): found by the next write, it would be written
// into, and its part files committed, with an entry a crash may lose.
func (s *Store) ensureDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	err := s.syncDir(filepath.Dir(dir))
	if err == nil {
		err = s.syncDir(s.dir)
	}
	if err != nil {
		_ = os.Remove(dir)
	}
	return err
}

// syncBlobDir fsyncs blob's directory once a commit renamed part files
// into it, outside the blob lock. One removed meanwhile, by a DeleteBlob
// of the blob, fails as ErrNotFound: what the commit wrote was deleted.
func (s *Store) syncBlobDir(blob string) error {
	err := s.syncDir(s.blobDir(blob))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("the blob's directory was removed while its shards were committed (the blob deleted meanwhile?): %w: %w", ErrNotFound, err)
	}
	return err
}

// syncDir fsyncs a directory of the store, after Options.WriteFault.
func (s *Store) syncDir(dir string) error {
	if err := s.injected("sync", dir); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// open opens the part file holding shard id for reading; the caller holds
// the part's read lock.
func (s *Store) open(id ID) (*partFile, error) {
	if err := checkBlob(id.Blob); err != nil {
		return nil, err
	}
	pf, err := s.openStored(s.Path(id), id.Blob, id.Index)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("shardstore: read %s: %w", id, ErrNotFound)
	}
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return nil, fmt.Errorf("shardstore: read %s: %w", id, err)
	}
	return pf, err
}

// read opens id's part file and calls fn with it under the part's read
// lock.
func (s *Store) read(id ID, fn func(pf *partFile) error) error {
	if err := checkBlob(id.Blob); err != nil {
		return err
	}
	pl := s.partLock(id.Blob, id.Index)
	pl.RLock()
	defer pl.RUnlock()
	return s.readOpen(id, fn)
}

// readChecked is read for an fn that checks every payload it reads
// against its CRC32C (Get, VerifyPart). It runs fn first without the
// part's lock: a read hung on the disk (the scrubber's, or one its caller
// stopped waiting for) would otherwise hold off every write of a part
// file under that lock, and, as a waiting writer holds off new readers
// of an RWMutex, their reads too. A write of the file meanwhile (a
// merge, written in place) can only make what fn reads fail a check or
// come short, so fn runs again under the lock when it fails for any
// other reason than a shard not held; that answer stands. fn must start
// afresh each time.
func (s *Store) readChecked(id ID, fn func(pf *partFile) error) error {
	err := s.readOpen(id, fn)
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalidID) {
		return err
	}
	return s.read(id, fn)
}

// readOpen opens id's part file and calls fn with it.
func (s *Store) readOpen(id ID, fn func(pf *partFile) error) error {
	pf, err := s.open(id)
	if err != nil {
		return err
	}
	defer pf.close()
	return fn(pf)
}

// Get reads shard id from its part file: it seeks to the block's slot and
// checks the frame and the payload's checksum. The payload is returned in
// dst when its capacity suffices, else in a new slice. A block that fails
// a check is a *CorruptError (ErrCorrupt) naming the file and the block;
// no payload is returned then. A shard not held is ErrNotFound.
func (s *Store) Get(id ID, dst []byte) (Header, []byte, error) {
	var h Header
	var payload []byte
	err := s.readChecked(id, func(pf *partFile) error {
		var err error
		h, payload, err = pf.read(id.Block, dst)
		return err
	})
	if err != nil {
		return Header{}, nil, err
	}
	return h, payload, nil
}

// Stat reads and checks shard id's part header and frame header, not its
// payload.
func (s *Store) Stat(id ID) (Header, error) {
	var h Header
	err := s.read(id, func(pf *partFile) error {
		var err error
		h, err = pf.frame(id.Block)
		return err
	})
	return h, err
}

var verifyBufs = sync.Pool{New: func() any { return new([]byte) }}

// Verify reads shard id and checks it like Get, into a reused buffer: for
// the scrubber.
func (s *Store) Verify(id ID) error {
	bp := verifyBufs.Get().(*[]byte)
	defer verifyBufs.Put(bp)
	_, b, err := s.Get(id, *bp)
	if b != nil {
		*bp = b[:0]
	}
	return err
}

// VerifyPart checks every block held in the part file of shard index of
// blob and returns the blocks that fail. A part file whose header is bad
// is an error wrapping ErrCorrupt; a missing one ErrNotFound.
func (s *Store) VerifyPart(blob string, index uint16) (bad []uint32, err error) {
	id := ID{Blob: blob, Index: index}
	err = s.readChecked(id, func(pf *partFile) error {
		bad = nil
		held, err := pf.held()
		if err != nil {
			return err
		}
		var buf []byte
		for _, b := range held {
			var rerr error
			_, buf, rerr = pf.read(b, buf)
			var ce *CorruptError
			switch {
			case errors.As(rerr, &ce):
				bad = append(bad, b)
			case rerr != nil:
				return rerr
			}
		}
		return nil
	})
	return bad, err
}

// Delete removes shard id: its slot becomes a hole, and the part file
// goes with its last shard. A missing shard is not an error; a part file
// whose header is bad is kept, with an error (DeleteIfSame). Deletes are
// not fsynced: after a crash a deleted shard may reappear, and is then an
// orphan that orphan collection deletes again.
func (s *Store) Delete(id ID) error {
	if err := checkBlob(id.Blob); err != nil {
		return err
	}
	_, err := s.deleteBlocks(id.Blob, id.Index, []uint32{id.Block}, nil)
	return err
}

// DeleteIfSame removes the shards blocks of index of blob only if their
// part file is still the one st was taken of (by WalkStamped or
// WalkBadParts), and returns how many it removed. With no blocks (a part
// file WalkBadParts listed, whose blob is gone) a part file whose header
// is bad is removed whole; with blocks, such a file is kept and an error
// returned, since the other blocks behind that header were not judged.
// A part file written since, such as one repair has just rebuilt a block
// of, is kept: deciding a shard is an orphan and deleting it are not one
// step.
func (s *Store) DeleteIfSame(blob string, index uint16, blocks []uint32, st Stamp) (int, error) {
	if err := checkBlob(blob); err != nil {
		return 0, err
	}
	return s.deleteBlocks(blob, index, blocks, &st)
}

// deleteBlocks turns blocks of a part file into holes, removing the file
// when no block is left; with st, only when the file is unchanged since.
// A part file whose header is bad goes whole only when no blocks are
// named: it may hold blocks a blob still places here, readable again once
// its header is (a sector that failed a read for a moment).
func (s *Store) deleteBlocks(blob string, index uint16, blocks []uint32, st *Stamp) (int, error) {
	id := ID{Blob: blob, Index: index}
	unlock := s.lockBlob(blob) // excludes writes
	defer unlock()
	path := s.Path(id)
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("shardstore: delete %s: %w", id, err)
	}
	if st != nil && !st.same(info) {
		return 0, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("shardstore: delete %s: %w", id, err)
	}
	defer f.Close()
	pf, err := readPart(f, path, blob, index)
	if err != nil && len(blocks) > 0 {
		return 0, fmt.Errorf("shardstore: delete blocks %v of shard %d of blob %s: the part file's header is bad or unreadable, so its other blocks cannot be told apart; kept: %w",
			blocks, index, blob, err)
	}
	if err != nil { // a bad header, its blob judged gone: its blocks are unreadable anyway
		if rerr := os.Remove(path); rerr != nil {
			return 0, fmt.Errorf("shardstore: delete %s: %w", id, rerr)
		}
		s.partGone(partKey{blob, index}, info.Size())
		_ = os.Remove(filepath.Dir(path))
		return 0, nil
	}
	pf.readFault = s.opts.ReadFault
	held, err := pf.held()
	if err != nil {
		return 0, err
	}
	drop := make(map[uint32]bool, len(blocks))
	for _, b := range blocks {
		drop[b] = true
	}
	n := 0
	for _, b := range held {
		if drop[b] {
			n++
		}
	}
	if n == len(held) {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("shardstore: delete %s: %w", id, err)
		}
		s.partGone(partKey{blob, index}, info.Size())
		// Drop the blob's directory with its last part file; it fails,
		// harmlessly, while other files are left.
		_ = os.Remove(filepath.Dir(path))
		return n, nil
	}
	for _, b := range held {
		if drop[b] {
			if err := clearFrame(f, &pf.hdr, b); err != nil {
				return 0, fmt.Errorf("shardstore: delete %s: %w", ID{blob, b, index}, err)
			}
		}
	}
	s.partChanged(partKey{blob, index}, 0, -n)
	return n, nil
}

// DeleteBlob removes every shard of blob, staged or not, and its
// directory, and returns how many shards it removed.
func (s *Store) DeleteBlob(blob string) (int, error) {
	if err := checkBlob(blob); err != nil {
		return 0, err
	}
	unlock := s.lockBlob(blob)
	defer unlock()
	s.discardStaged(blob)
	dir := s.blobDir(blob)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("shardstore: delete blob %s: %w", blob, err)
	}
	n := 0
	for _, e := range entries {
		index, isPart := parsePartName(e.Name())
		if !isPart && !isTemp(e.Name()) {
			continue // not ours: left in place, and so is the directory
		}
		path := filepath.Join(dir, e.Name())
		info, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("shardstore: delete blob %s: %w", blob, err)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, fmt.Errorf("shardstore: delete blob %s: %w", blob, err)
		}
		if isPart {
			n += s.partGone(partKey{blob, index}, info.Size())
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return n, fmt.Errorf("shardstore: delete blob %s: %w", blob, err)
	}
	return n, nil
}
