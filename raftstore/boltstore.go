package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

var (
	// ErrKeyNotFound is returned, unwrapped, by Get and GetUint64 for a
	// missing key; raft compares the error text with "not found".
	ErrKeyNotFound = errors.New("not found")
	// ErrCorruptStore is wrapped by errors for a file that is not a zrpc
	// raft log or whose contents cannot be decoded.
	ErrCorruptStore = errors.New("corrupt raft log store")
)

const formatMarker = "zrpc-raftlog-v1"

var (
	bucketLogs = []byte("logs")
	bucketConf = []byte("conf")
	bucketMeta = []byte("meta")
	keyFormat  = []byte("format")
)

// BoltStore keeps Raft's log and stable values in one bbolt file. It
// implements raft.LogStore, raft.StableStore and io.Closer.
//
// File layout (three top-level buckets):
//
//	meta  "format" -> "zrpc-raftlog-v1"; checked on every open, a file
//	      without it is refused and never modified.
//	logs  8-byte big-endian log index -> log entry in the encoding of
//	      encodeLog (version byte, type, uvarint index/term, length-prefixed
//	      data and extensions, optional varint AppendedAt unix nanos).
//	conf  stable-store key -> value as given to Set (SetUint64 stores 8
//	      big-endian bytes).
//
// A new file is built under a temporary name and hard-linked into place, so
// the path never holds a half-initialised store.
type BoltStore struct {
	db   *bbolt.DB
	path string
}

// BoltOptions configures OpenBoltStore.
type BoltOptions struct {
	Path    string        // file path, created if missing (mode 0600)
	NoSync  bool          // for tests/benchmarks only; default false: every StoreLogs/Set is fsynced
	Timeout time.Duration // how long Open waits for the file lock; 0 (or negative) means 1s
	// Member is the agent's name, used in the advice of an error about a
	// damaged file ("NAME" when empty).
	Member string
}

// OpenBoltStore opens the store at opts.Path, creating it if missing. An
// existing file must carry the format marker; otherwise an error wrapping
// ErrCorruptStore is returned and the file is left untouched.
func OpenBoltStore(opts BoltOptions) (*BoltStore, error) {
	path := opts.Path
	if path == "" {
		return nil, errors.New("open raft log: empty path")
	}
	bopts := &bbolt.Options{
		Timeout:        opts.Timeout,
		NoSync:         opts.NoSync,
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	}
	if bopts.Timeout <= 0 {
		bopts.Timeout = time.Second
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := createStore(path, bopts); err != nil {
			return nil, fmt.Errorf("open raft log %s: create: %w", path, err)
		}
	case err != nil:
		return nil, fmt.Errorf("open raft log %s: %w", path, err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("open raft log %s: %w: not a regular file", path, ErrCorruptStore)
	case fi.Size() == 0:
		// bbolt would silently initialise an empty file; we never create one.
		return nil, corruptErr(path, opts.Member, "not a zrpc raft log: the file is empty")
	default:
		if err := checkBoltFile(path, *bopts); err != nil {
			return nil, openError(path, opts.Member, bopts.Timeout, err)
		}
	}
	db, err := guardBolt(func() (*bbolt.DB, error) { return bbolt.Open(path, 0o600, bopts) })
	if err != nil {
		return nil, openError(path, opts.Member, bopts.Timeout, err)
	}
	if err := db.View(checkFormat); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open raft log %s: %w", path, err)
	}
	return &BoltStore{db: db, path: path}, nil
}

// openError explains why an existing file could not be opened.
func openError(path, member string, timeout time.Duration, err error) error {
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("open raft log %s: file is locked after %v, another agent may be using the data dir: %w", path, timeout, err)
	}
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		return fmt.Errorf("open raft log %s: %w", path, err)
	}
	detail := err.Error()
	if errors.Is(err, bolterrors.ErrInvalid) {
		detail = "not a bbolt file: " + detail
	}
	return corruptErr(path, member, detail)
}

// createStore builds a fresh store under a temporary name next to path and
// links it into place; if path appeared meanwhile, that file is kept.
func createStore(path string, bopts *bbolt.Options) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".init-*")
	if err != nil {
		return err
	}
	tmpPath := tmp.Name()
	defer os.Remove(tmpPath)
	if err := tmp.Close(); err != nil {
		return err
	}
	db, err := bbolt.Open(tmpPath, 0o600, bopts)
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketLogs, bucketConf, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keyFormat, []byte(formatMarker))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(tmpPath, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if bopts.NoSync {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func checkFormat(tx *bbolt.Tx) error {
	var got []byte
	if meta := tx.Bucket(bucketMeta); meta != nil {
		got = meta.Get(keyFormat)
	}
	if got == nil {
		return fmt.Errorf("%w: not a zrpc raft log (format marker missing)", ErrCorruptStore)
	}
	if string(got) != formatMarker {
		return fmt.Errorf("%w: not a zrpc raft log (format marker %.64q, want %q)", ErrCorruptStore, got, formatMarker)
	}
	for _, name := range [][]byte{bucketLogs, bucketConf} {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("%w: bucket %q missing", ErrCorruptStore, name)
		}
	}
	return nil
}

// Close closes the file. It is safe to call more than once; later calls on
// the store return errors.
func (s *BoltStore) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close raft log %s: %w", s.path, err)
	}
	return nil
}

// FirstIndex returns the lowest stored index, 0 if the log is empty.
func (s *BoltStore) FirstIndex() (uint64, error) { return s.edgeIndex("first index", true) }

// LastIndex returns the highest stored index, 0 if the log is empty.
func (s *BoltStore) LastIndex() (uint64, error) { return s.edgeIndex("last index", false) }

func (s *BoltStore) edgeIndex(op string, first bool) (idx uint64, err error) {
	err = s.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketLogs).Cursor()
		k, _ := c.Last()
		if first {
			k, _ = c.First()
		}
		if k != nil && len(k) != 8 {
			return fmt.Errorf("%w: log key of %d bytes", ErrCorruptStore, len(k))
		} else if k != nil {
			idx = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	return idx, nil
}

// GetLog reads the entry at index into log; raft.ErrLogNotFound if absent.
func (s *BoltStore) GetLog(index uint64, log *raft.Log) error {
	key := binary.BigEndian.AppendUint64(make([]byte, 0, 8), index)
	err := s.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketLogs).Get(key)
		if v == nil {
			return raft.ErrLogNotFound
		}
		if err := decodeLog(v, log); err != nil {
			return err
		}
		if log.Index != index {
			return fmt.Errorf("%w: entry under key %d has index %d", ErrCorruptStore, index, log.Index)
		}
		return nil
	})
	if err != nil && err != raft.ErrLogNotFound {
		return fmt.Errorf("get log %d: %w", index, err)
	}
	return err
}

// StoreLog stores one entry.
func (s *BoltStore) StoreLog(log *raft.Log) error { return s.StoreLogs([]*raft.Log{log}) }

// StoreLogs stores all entries in a single transaction (one fsync).
func (s *BoltStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	// Encode outside the write lock; bbolt needs keys/values until commit.
	keys := make([]byte, 8*len(logs))
	vals := make([][]byte, len(logs))
	size := 0
	for _, l := range logs {
		size += len(l.Data) + len(l.Extensions) + 2 + 5*binary.MaxVarintLen64
	}
	buf := make([]byte, 0, size)
	for i, l := range logs {
		binary.BigEndian.PutUint64(keys[8*i:], l.Index)
		start := len(buf)
		buf = encodeLog(buf, l)
		vals[i] = buf[start:len(buf):len(buf)]
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		b.FillPercent = 1.0 // entries are appended in index order
		for i := range logs {
			if err := b.Put(keys[8*i:8*i+8], vals[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store logs: %w", err)
	}
	return nil
}

// DeleteRange deletes entries min..max inclusive in one transaction.
func (s *BoltStore) DeleteRange(min, max uint64) error {
	if min > max {
		return nil
	}
	var seek [8]byte
	binary.BigEndian.PutUint64(seek[:], min)
	err := s.db.Update(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketLogs).Cursor()
		// Seek past each deleted key rather than calling Next, which can
		// skip a key after Delete (bbolt#146). Seeking from min again would
		// walk every emptied leaf each time.
		for k, _ := c.Seek(seek[:]); k != nil; k, _ = c.Seek(seek[:]) {
			idx := binary.BigEndian.Uint64(k)
			if idx > max {
				return nil
			}
			if err := c.Delete(); err != nil {
				return err
			}
			if idx == max { // also stops at math.MaxUint64
				return nil
			}
			binary.BigEndian.PutUint64(seek[:], idx+1)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete logs %d..%d: %w", min, max, err)
	}
	return nil
}

// Set stores a stable value.
func (s *BoltStore) Set(key, val []byte) error {
	err := s.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketConf).Put(key, val)
	})
	if err != nil {
		return fmt.Errorf("set %q: %w", key, err)
	}
	return nil
}

// Get returns a copy of a stable value, or ErrKeyNotFound (unwrapped).
func (s *BoltStore) Get(key []byte) ([]byte, error) {
	var val []byte
	err := s.db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(bucketConf).Get(key); v != nil {
			val = append(make([]byte, 0, len(v)), v...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("get %q: %w", key, err)
	}
	if val == nil {
		return nil, ErrKeyNotFound
	}
	return val, nil
}

// SetUint64 stores val as 8 big-endian bytes.
func (s *BoltStore) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns a value stored by SetUint64, or ErrKeyNotFound.
func (s *BoltStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("get uint64 %q: %w: value of %d bytes", key, ErrCorruptStore, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

const (
	logEncodingV1  = 1
	flagAppendedAt = 1 << 0
)

// encodeLog appends the binary form of l to dst.
func encodeLog(dst []byte, l *raft.Log) []byte {
	dst = append(dst, logEncodingV1, byte(l.Type))
	dst = binary.AppendUvarint(dst, l.Index)
	dst = binary.AppendUvarint(dst, l.Term)
	dst = binary.AppendUvarint(dst, uint64(len(l.Data)))
	dst = append(dst, l.Data...)
	dst = binary.AppendUvarint(dst, uint64(len(l.Extensions)))
	dst = append(dst, l.Extensions...)
	if l.AppendedAt.IsZero() {
		return append(dst, 0)
	}
	dst = append(dst, flagAppendedAt)
	return binary.AppendVarint(dst, l.AppendedAt.UnixNano())
}

// decodeLog parses b into l, copying byte fields (b may be bbolt memory).
func decodeLog(b []byte, l *raft.Log) error {
	bad := func(what string) error { return fmt.Errorf("%w: decode log: %s", ErrCorruptStore, what) }
	if len(b) < 2 || b[0] != logEncodingV1 {
		return bad("truncated header or unknown encoding version")
	}
	out := raft.Log{Type: raft.LogType(b[1])}
	b = b[2:]
	var u [4]uint64 // index, term, len(data), len(extensions)
	var blob [2][]byte
	for i := range u {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return bad("truncated or overlong varint")
		}
		u[i], b = v, b[n:]
		if i >= 2 {
			if v > uint64(len(b)) {
				return bad(fmt.Sprintf("length %d exceeds remaining %d bytes", v, len(b)))
			}
			blob[i-2], b = b[:v], b[v:]
		}
	}
	out.Index, out.Term = u[0], u[1]
	if len(blob[0]) > 0 {
		out.Data = bytes.Clone(blob[0])
	}
	if len(blob[1]) > 0 {
		out.Extensions = bytes.Clone(blob[1])
	}
	if len(b) == 0 || b[0]&^flagAppendedAt != 0 {
		return bad("truncated or unknown flags")
	}
	flags := b[0]
	if b = b[1:]; flags == flagAppendedAt {
		ns, n := binary.Varint(b)
		if n <= 0 {
			return bad("truncated or overlong appended-at")
		}
		out.AppendedAt, b = time.Unix(0, ns), b[n:]
	}
	if len(b) != 0 {
		return bad(fmt.Sprintf("%d trailing bytes", len(b)))
	}
	*l = out
	return nil
}
