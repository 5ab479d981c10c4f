// Package shardstore keeps the erasure-coded shards an agent holds, one
// file per shard under a directory:
//
//	<dir>/<blob[0:2]>/<blob>/<block>.<index>.shard
//
// Each file is a fixed header (the shard's id, its block's scheme and
// lengths, the payload's CRC32C, and the header's own CRC32C) followed by
// the payload. A write goes to a temporary file in the same directory, is
// fsynced and renamed over the final name, and the directory is fsynced, so
// a crash never leaves a partial shard under a real name; temporary files
// left by a crash are removed by Open. A put of many shards may Stage them
// instead (temporary files, not synced) and CommitStaged them together:
// concurrent fsyncs, then the renames, then one directory fsync; staged
// shards are never readable before that. Every read checks the header and the
// payload checksum, and a file that fails is reported as ErrCorrupt, never
// returned as data.
//
// The package is the local disk only. It does not know which agent should
// hold which shard, does not encode (storage/codec) and does not repair:
// the storage package decides what to put, scrub and delete.
package shardstore

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

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
	// index, lengths).
	ErrInvalidHeader = errors.New("invalid shard header")
)

// Options configure a Store.
type Options struct {
	Logger   *slog.Logger // nil: discard
	MaxBytes int64        // bytes of shard files (headers included) to hold at most; 0: unlimited
	// SyncDelay, when set, is called before every fsync of a shard file
	// (a Put's, a staged shard's) and the fsync waits as long as it
	// returns: tests make a slow disk with it. It may be called from
	// several goroutines at once.
	SyncDelay func() time.Duration
}

// Store is the shard directory of one agent. Its methods are safe for
// concurrent use. Puts to different shards run in parallel; operations on
// one shard are serialised; Delete and DeleteBlob exclude Puts to the same
// blob (they remove its directory).
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger

	mu        sync.Mutex // guards the usage counters
	bytes     int64
	shards    int
	badAtOpen int

	blobLocks  [64]sync.RWMutex // by blob: Put shares, Delete/DeleteBlob own
	shardLocks [256]sync.Mutex  // by shard: one writer per file

	stagedMu sync.Mutex
	staged   map[string]map[ID]stagedFile // by blob: shards written by Stage, not yet committed
	syncSem  chan struct{}                // bounds background fsyncs of staged shards
}

// Open opens (creating it if needed) the shard directory dir: it removes
// temporary files left by a crash and reads every shard's header to
// compute usage. A shard file with a bad header or length is logged and
// counted (BadAtOpen), still listed by Walk and reported as ErrCorrupt by
// reads, so that the scrubber has it rebuilt.
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
	s := &Store{dir: dir, opts: opts, log: log, staged: make(map[string]map[ID]stagedFile),
		syncSem: make(chan struct{}, syncParallel)}
	if err := s.scan(); err != nil {
		return nil, err
	}
	s.log.Info("shard store opened", "dir", dir, "shards", s.shards, "bytes", s.bytes, "bad", s.badAtOpen)
	return s, nil
}

// scan removes temporary files and counts the shards.
func (s *Store) scan() error {
	return s.walk(func(path string, id ID, info fs.FileInfo) error {
		s.bytes += info.Size()
		s.shards++
		if err := checkFile(path, id); err != nil {
			s.badAtOpen++
			s.log.Warn("bad shard file; it will read as corrupt until repaired", "path", path, "err", err)
		}
		return nil
	}, func(path string) {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("remove temporary shard file", "path", path, "err", err)
			return
		}
		s.log.Info("removed temporary shard file left by a crash", "path", path)
	}, func(path string) {
		s.log.Warn("not a shard file; ignored", "path", path)
	})
}

// checkFile opens a shard file and checks its header and length.
func checkFile(path string, id ID) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = readHeader(f, path, id)
	return err
}

// Path is the file of shard id, or "" for an invalid id.
func (s *Store) Path(id ID) string {
	if !validBlob(id.Blob) {
		return ""
	}
	return filepath.Join(s.blobDir(id.Blob), fileName(id.Block, id.Index))
}

func (s *Store) blobDir(blob string) string {
	return filepath.Join(s.dir, blob[:2], blob)
}

// path is Path with ErrInvalidID for a bad id.
func (s *Store) path(id ID) (string, error) {
	if err := checkBlob(id.Blob); err != nil {
		return "", err
	}
	return s.Path(id), nil
}

// fnv1a is FNV-1a over the blob id and the shard's numbers, for lock
// striping.
func fnv1a(blob string, block uint32, index uint16) uint32 {
	h := uint32(2166136261)
	for i := range len(blob) {
		h = (h ^ uint32(blob[i])) * 16777619
	}
	for _, b := range [6]byte{byte(block), byte(block >> 8), byte(block >> 16), byte(block >> 24), byte(index), byte(index >> 8)} {
		h = (h ^ uint32(b)) * 16777619
	}
	return h
}

func (s *Store) blobLock(blob string) *sync.RWMutex {
	return &s.blobLocks[fnv1a(blob, 0, 0)%uint32(len(s.blobLocks))]
}

func (s *Store) shardLock(id ID) *sync.Mutex {
	return &s.shardLocks[fnv1a(id.Blob, id.Block, id.Index)%uint32(len(s.shardLocks))]
}

// Usage is the bytes of all shard files (headers included) and their
// number.
func (s *Store) Usage() (bytes int64, shards int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes, s.shards
}

// BadAtOpen is how many shard files Open found with a bad header or length.
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

// checkPut checks a shard given to Put or Stage.
func checkPut(h *Header, payload []byte) error {
	if err := h.check(); err != nil {
		return err
	}
	if int64(h.ShardLen) != int64(len(payload)) {
		return fmt.Errorf("shardstore: put %s: header says %d bytes, payload has %d: %w", h.ID, h.ShardLen, len(payload), ErrInvalidHeader)
	}
	if sum := codec.Checksum(payload); sum != h.Sum {
		return fmt.Errorf("shardstore: put %s: payload checksum %08x, header says %08x: %w", h.ID, sum, h.Sum, ErrCorrupt)
	}
	return nil
}

// fileSize is the size of the file at path, and whether it exists.
func fileSize(path string) (int64, bool, error) {
	info, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, false, nil
	case err != nil:
		return 0, false, err
	}
	return info.Size(), true, nil
}

// Put stores a shard, replacing any shard with the same id (repair
// rewrites a corrupt one). h must be consistent (ErrInvalidID,
// ErrInvalidHeader), h.ShardLen must be len(payload) and h.Sum its CRC32C
// (ErrCorrupt otherwise). When it returns nil the shard is on disk and
// survives a crash; when it fails nothing has changed.
func (s *Store) Put(h Header, payload []byte) error {
	if err := checkPut(&h, payload); err != nil {
		return err
	}
	bl := s.blobLock(h.ID.Blob)
	bl.RLock()
	defer bl.RUnlock()
	sl := s.shardLock(h.ID)
	sl.Lock()
	defer sl.Unlock()

	path := s.Path(h.ID)
	old, existed, err := fileSize(path)
	if err != nil {
		return fmt.Errorf("shardstore: put %s: %w", h.ID, err)
	}
	delta, dShards := int64(HeaderSize+len(payload))-old, 1
	if existed {
		dShards = 0
	}
	if err := s.reserve(h.ID, delta, dShards); err != nil {
		return err
	}
	if err := s.write(path, &h, payload); err != nil {
		s.release(delta, dShards)
		if errors.Is(err, syscall.ENOSPC) {
			return fmt.Errorf("shardstore: put %s: %w: %w", h.ID, ErrNoSpace, err)
		}
		return fmt.Errorf("shardstore: put %s: %w", h.ID, err)
	}
	return nil
}

// write writes the shard file atomically: temporary file, fsync, rename,
// fsync of the directory.
func (s *Store) write(path string, h *Header, payload []byte) error {
	tmp, err := s.writeTemp(path, h, payload, true)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// writeTemp writes header and payload to a new temporary file next to
// path, fsynced when sync is set, and returns its name.
func (s *Store) writeTemp(path string, h *Header, payload []byte, sync bool) (tmp string, err error) {
	dir := filepath.Dir(path)
	if err := s.ensureDir(dir); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*"+tmpSuffix)
	if err != nil {
		return "", err
	}
	tmp = f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	var hdr [HeaderSize]byte
	h.marshal(hdr[:])
	if _, err := f.Write(hdr[:]); err != nil {
		return "", err
	}
	if _, err := f.Write(payload); err != nil {
		return "", err
	}
	if sync {
		if err := s.fsync(f); err != nil {
			return "", err
		}
	}
	return tmp, f.Close()
}

// fsync flushes a shard file to disk, after Options.SyncDelay.
func (s *Store) fsync(f *os.File) error {
	if s.opts.SyncDelay != nil {
		if d := s.opts.SyncDelay(); d > 0 {
			time.Sleep(d)
		}
	}
	return f.Sync()
}

// ensureDir creates a blob directory and makes its entry durable.
func (s *Store) ensureDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	return syncDir(s.dir)
}

func syncDir(dir string) error {
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

// readHeader reads and checks the header of the shard file f at path,
// which must be shard id, and checks the file's length against it.
func readHeader(f *os.File, path string, id ID) (Header, error) {
	var buf [HeaderSize]byte
	if _, err := io.ReadFull(f, buf[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return Header{}, fmt.Errorf("shardstore: read %s: %w: file shorter than a header", path, ErrCorrupt)
		}
		return Header{}, fmt.Errorf("shardstore: read %s: %w", path, err)
	}
	h, err := unmarshalHeader(buf[:])
	if err != nil {
		return Header{}, fmt.Errorf("shardstore: read %s: %w: %w", path, ErrCorrupt, err)
	}
	if h.ID != id {
		return Header{}, fmt.Errorf("shardstore: read %s: %w: file holds shard %s", path, ErrCorrupt, h.ID)
	}
	info, err := f.Stat()
	if err != nil {
		return Header{}, fmt.Errorf("shardstore: read %s: %w", path, err)
	}
	if want := int64(HeaderSize) + int64(h.ShardLen); info.Size() != want {
		return Header{}, fmt.Errorf("shardstore: read %s: %w: %d bytes, header says %d", path, ErrCorrupt, info.Size(), want)
	}
	return h, nil
}

// open opens the file of shard id for reading.
func (s *Store) open(id ID) (*os.File, string, error) {
	path, err := s.path(id)
	if err != nil {
		return nil, "", err
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, path, fmt.Errorf("shardstore: read %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, path, fmt.Errorf("shardstore: read %s: %w", path, err)
	}
	return f, path, nil
}

// Get reads shard id and checks it (header, id, length, payload checksum).
// The payload is returned in dst when its capacity suffices, else in a new
// slice. A shard that fails a check is an error wrapping ErrCorrupt and
// naming the file; no payload is returned then. A missing one is
// ErrNotFound.
func (s *Store) Get(id ID, dst []byte) (Header, []byte, error) {
	f, path, err := s.open(id)
	if err != nil {
		return Header{}, nil, err
	}
	defer f.Close()
	h, err := readHeader(f, path, id)
	if err != nil {
		return Header{}, nil, err
	}
	n := int(h.ShardLen)
	if dst != nil && cap(dst) >= n {
		dst = dst[:n]
	} else {
		dst = make([]byte, n)
	}
	if _, err := io.ReadFull(f, dst); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return Header{}, nil, fmt.Errorf("shardstore: read %s: %w: payload cut short", path, ErrCorrupt)
		}
		return Header{}, nil, fmt.Errorf("shardstore: read %s: %w", path, err)
	}
	if sum := codec.Checksum(dst); sum != h.Sum {
		return Header{}, nil, fmt.Errorf("shardstore: read %s: %w: payload checksum %08x, header says %08x", path, ErrCorrupt, sum, h.Sum)
	}
	return h, dst, nil
}

// Stat reads and checks shard id's header and file length, not its payload.
func (s *Store) Stat(id ID) (Header, error) {
	f, path, err := s.open(id)
	if err != nil {
		return Header{}, err
	}
	defer f.Close()
	return readHeader(f, path, id)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Verify reads shard id in full and checks it like Get, without holding the
// payload in memory: for the scrubber.
func (s *Store) Verify(id ID) error {
	f, path, err := s.open(id)
	if err != nil {
		return err
	}
	defer f.Close()
	h, err := readHeader(f, path, id)
	if err != nil {
		return err
	}
	sum := crc32.New(castagnoli)
	n, err := io.Copy(sum, f)
	if err != nil {
		return fmt.Errorf("shardstore: verify %s: %w", path, err)
	}
	if n != int64(h.ShardLen) {
		return fmt.Errorf("shardstore: verify %s: %w: payload is %d bytes, header says %d", path, ErrCorrupt, n, h.ShardLen)
	}
	if got := sum.Sum32(); got != h.Sum {
		return fmt.Errorf("shardstore: verify %s: %w: payload checksum %08x, header says %08x", path, ErrCorrupt, got, h.Sum)
	}
	return nil
}

// Delete removes shard id; a missing shard is not an error. Deletes are not
// fsynced: after a crash a deleted shard may reappear, and is then an
// orphan that orphan collection deletes again.
func (s *Store) Delete(id ID) error {
	path, err := s.path(id)
	if err != nil {
		return err
	}
	bl := s.blobLock(id.Blob)
	bl.Lock()
	defer bl.Unlock()
	size, existed, err := fileSize(path)
	if err != nil {
		return fmt.Errorf("shardstore: delete %s: %w", id, err)
	}
	if !existed {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("shardstore: delete %s: %w", id, err)
	}
	s.release(size, 1)
	// Drop the blob's directory with its last shard; it fails, harmlessly,
	// while other shards are left.
	_ = os.Remove(filepath.Dir(path))
	return nil
}

// DeleteIfSame removes shard id only if its file is still the one st was
// taken of (by WalkStamped), and reports whether it did. A shard written
// since, such as one repair has just stored under the same name, is kept:
// deciding a file is an orphan and deleting it are not one step.
func (s *Store) DeleteIfSame(id ID, st Stamp) (bool, error) {
	path, err := s.path(id)
	if err != nil {
		return false, err
	}
	bl := s.blobLock(id.Blob) // excludes Put and CommitStaged renames
	bl.Lock()
	defer bl.Unlock()
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("shardstore: delete %s: %w", id, err)
	}
	if !st.same(info) {
		return false, nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("shardstore: delete %s: %w", id, err)
	}
	s.release(info.Size(), 1)
	_ = os.Remove(filepath.Dir(path)) // only when it was the blob's last shard
	return true, nil
}

// DeleteBlob removes every shard of blob and its directory, and returns
// how many shards it removed.
func (s *Store) DeleteBlob(blob string) (int, error) {
	if err := checkBlob(blob); err != nil {
		return 0, err
	}
	s.discardStaged(blob)
	bl := s.blobLock(blob)
	bl.Lock()
	defer bl.Unlock()
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
		_, _, isShard := parseFileName(e.Name())
		if !isShard && !isTemp(e.Name()) {
			continue // not ours: left in place, and so is the directory
		}
		path := filepath.Join(dir, e.Name())
		size, existed, err := fileSize(path)
		if err == nil && existed {
			err = os.Remove(path)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, fmt.Errorf("shardstore: delete blob %s: %w", blob, err)
		}
		if isShard && existed {
			s.release(size, 1)
			n++
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return n, fmt.Errorf("shardstore: delete blob %s: %w", blob, err)
	}
	return n, nil
}
