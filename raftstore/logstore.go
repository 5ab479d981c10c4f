package raftstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	walfs "github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	waltypes "github.com/hashicorp/raft-wal/types"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrCorruptStore is wrapped by errors for a Raft log whose files are
// damaged or are not a zrpc Raft log.
var ErrCorruptStore = errors.New("corrupt raft log store")

// The Raft log and stable store are hashicorp/raft-wal in <Dir>/wal:
// segment files (<base index>-<id>.wal, preallocated, one fsync per
// append) and wal-meta.db, a small bbolt file holding the list of segments
// and raft's stable values (current term, last vote).
//
// Segments are 16 MiB, not raft-wal's 64: opening the log reads every
// segment to verify it, and a segment is deleted only once snapshots have
// compacted all its entries, so smaller ones keep a restart short; a
// rotation (one wal-meta.db commit) every 16 MiB of log costs nothing
// measurable.
const (
	walDirName     = "wal"
	walMetaFile    = metadb.FileName
	walSegmentExt  = ".wal"
	walMetaBucket  = metadb.MetaBucket
	walMetaKey     = metadb.MetaKey
	logLockTimeout = time.Second
	logSegmentSize = 16 << 20
)

// logOptions configures openLog.
type logOptions struct {
	Dir    string // the WAL directory; it must exist
	NoSync bool   // tests and benchmarks only: appends are not fsynced
	// Member is the agent's name, used in the advice of an error about a
	// damaged log ("NAME" when empty).
	Member      string
	Logger      *slog.Logger
	SegmentSize int // 0: logSegmentSize
	// fs is the file system under the log (tests inject faults); nil: the
	// operating system's.
	fs waltypes.VFS
	// syncFirst fsyncs a leader's batch before StoreLogs returns
	// (benchmarks; syncahead.go).
	syncFirst bool
}

var (
	_ raft.LogStore          = (*logStore)(nil)
	_ raft.StableStore       = (*logStore)(nil)
	_ raft.MonotonicLogStore = (*logStore)(nil)
)

// openLog opens the Raft log in opts.Dir, creating an empty one in an empty
// directory. Existing files are checked first (checkLogFiles), so that a
// damaged log is refused with an error wrapping ErrCorruptStore and left as
// it is, instead of crashing the agent in bbolt or being silently cut short
// by raft-wal's recovery.
func openLog(opts logOptions) (*logStore, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SegmentSize == 0 {
		opts.SegmentSize = logSegmentSize
	}
	seal, err := checkLogFiles(opts.Dir, opts.Member)
	if err != nil {
		return nil, err
	}
	if seal != nil {
		if err := finishRotation(opts.Dir, seal, opts.Logger); err != nil {
			return nil, fmt.Errorf("open raft log %s: %w", opts.Dir, err)
		}
	}
	vfs := opts.fs
	if vfs == nil {
		vfs = walfs.New()
	}
	vfs = lowSpaceFS{VFS: vfs, log: opts.Logger}
	if opts.NoSync {
		vfs = noSyncFS(vfs)
	}
	ahead := newSyncAhead(0) // durable up to the last index, set once open
	ahead.syncFirst = opts.syncFirst
	vfs = ahead.fs(vfs)
	meta := &metadb.BoltMetaDB{}
	w, err := guard(func() (*wal.WAL, error) {
		return wal.Open(opts.Dir,
			wal.WithMetaStore(aheadMeta{MetaStore: meta, a: ahead}),
			wal.WithSegmentFiler(segment.NewFiler(opts.Dir, vfs)),
			wal.WithSegmentSize(opts.SegmentSize),
			wal.WithLogger(NewHCLog(opts.Logger, "raft-wal")))
	})
	if err != nil {
		_ = meta.Close() // wal.Open leaves it open when it fails
		if errors.Is(err, waltypes.ErrCorrupt) || errors.Is(err, errPanic) {
			return nil, corruptErr(opts.Dir, opts.Member, err.Error())
		}
		return nil, fmt.Errorf("open raft log %s: %w", opts.Dir, err)
	}
	last, err := w.LastIndex()
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("open raft log %s: %w", opts.Dir, err)
	}
	ahead.setDurable(last)
	return &logStore{WAL: w, ahead: ahead}, nil
}

// checkLogFiles checks an existing log in dir before raft-wal opens it:
// wal-meta.db page by page (checkBoltFile), the segments it lists and their
// files (checkSegment). raft-wal itself trusts wal-meta.db (bbolt panics or
// faults on a damaged file), deletes segment files that wal-meta.db does
// not list, and ends the log at the first damaged frame of the last
// segment without telling it from a torn write.
//
// It returns the tail segment if its last append sealed it (see
// finishRotation).
func checkLogFiles(dir, member string) (seal *sealedTail, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	var segments, markers []string
	hasMeta := false
	for _, e := range entries {
		switch {
		case e.Name() == walMetaFile:
			hasMeta = true
		case strings.HasSuffix(e.Name(), walSegmentExt):
			segments = append(segments, e.Name())
		case strings.HasSuffix(e.Name(), walSegmentExt+unallocatedExt):
			markers = append(markers, e.Name())
		}
	}
	metaPath := filepath.Join(dir, walMetaFile)
	if !hasMeta {
		if len(segments) > 0 {
			return nil, corruptErr(metaPath, member, fmt.Sprintf("missing, and %d segment files are in %s", len(segments), dir))
		}
		return nil, nil
	}
	st, err := readLogState(metaPath, member)
	if err != nil {
		return nil, err
	}
	for i, seg := range st.Segments {
		name := segment.FileName(seg)
		path := filepath.Join(dir, name)
		tail := seg.SealTime.IsZero()
		if tail != (i == len(st.Segments)-1) {
			return nil, corruptErr(metaPath, member, fmt.Sprintf("segment %s is unsealed but not the last", name))
		}
		if !slices.Contains(segments, name) {
			if tail {
				continue // raft-wal creates the tail if a crash lost it before its first append
			}
			return nil, corruptErr(path, member, "segment file listed in "+walMetaFile+" is missing")
		}
		walk, err := checkSegment(path, seg, slices.Contains(markers, name+unallocatedExt))
		if err != nil {
			return nil, corruptErr(path, member, err.Error())
		}
		if tail && walk.indexStart > 0 {
			// The last append sealed the tail, and the crash came before
			// raft-wal's rotation recorded it: raft-wal would open the
			// segment for appends and refuse every one (ErrSealed).
			seal = &sealedTail{info: seg, walk: walk}
		}
	}
	return seal, nil
}

// sealedTail is a tail segment that its last append sealed.
type sealedTail struct {
	info waltypes.SegmentInfo
	walk segmentWalk
}

// finishRotation records in dir's wal-meta.db what raft-wal's rotation
// would have: the tail sealed at its last entry, and a new empty tail
// after it (whose file raft-wal creates when it opens the log).
func finishRotation(dir string, seal *sealedTail, log *slog.Logger) error {
	meta := &metadb.BoltMetaDB{}
	defer meta.Close()
	st, err := meta.Load(dir)
	if err != nil {
		return err
	}
	last := len(st.Segments) - 1
	if last < 0 || st.Segments[last].ID != seal.info.ID {
		return fmt.Errorf("%s changed while the log was opened", walMetaFile)
	}
	now := time.Now()
	old := &st.Segments[last]
	old.SealTime = now
	old.MaxIndex = old.BaseIndex + seal.walk.entries - 1
	old.IndexStart = uint64(seal.walk.indexStart)
	st.Segments = append(st.Segments, waltypes.SegmentInfo{
		ID: st.NextSegmentID, BaseIndex: old.MaxIndex + 1, MinIndex: old.MaxIndex + 1,
		SizeLimit: old.SizeLimit, Codec: old.Codec, CreateTime: now,
	})
	st.NextSegmentID++
	if err := meta.CommitState(st); err != nil {
		return err
	}
	log.Info("recorded the rotation of a full Raft log segment that a crash interrupted",
		"segment", segment.FileName(*old), "last_index", old.MaxIndex)
	return meta.Close()
}

// readLogState checks wal-meta.db page by page and reads its list of
// segments, with bbolt's panics and memory faults turned into errors.
func readLogState(path, member string) (waltypes.PersistentState, error) {
	var st waltypes.PersistentState
	fi, err := os.Stat(path)
	if err != nil {
		return st, fmt.Errorf("open raft log: %w", err)
	}
	if fi.Size() == 0 {
		// bbolt would silently initialise it, and raft-wal would then
		// delete every segment as unused.
		return st, corruptErr(path, member, "the file is empty")
	}
	bopts := bbolt.Options{Timeout: logLockTimeout}
	if err := checkBoltFile(path, bopts); err != nil {
		return st, boltOpenError(path, member, bopts.Timeout, err)
	}
	bopts.ReadOnly = true
	db, err := guardBolt(func() (*bbolt.DB, error) { return bbolt.Open(path, 0o400, &bopts) })
	if err != nil {
		return st, boltOpenError(path, member, bopts.Timeout, err)
	}
	defer closeBolt(db)
	_, err = guardBolt(func() (*bbolt.DB, error) {
		return nil, db.View(func(tx *bbolt.Tx) error {
			b := tx.Bucket([]byte(walMetaBucket))
			if b == nil {
				return fmt.Errorf("not a raft-wal meta file (bucket %q missing)", walMetaBucket)
			}
			if raw := b.Get([]byte(walMetaKey)); raw != nil {
				if err := json.Unmarshal(raw, &st); err != nil {
					return fmt.Errorf("segment list: %w", err)
				}
			}
			return nil
		})
	})
	if err != nil {
		return st, corruptErr(path, member, err.Error())
	}
	return st, nil
}

// boltOpenError explains why an existing bbolt file could not be opened.
func boltOpenError(path, member string, timeout time.Duration, err error) error {
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

// filesFS is raft-wal's file system with each writable file it creates or
// opens wrapped by wrap, given the file's path.
type filesFS struct {
	waltypes.VFS
	wrap func(path string, f waltypes.WritableFile) waltypes.WritableFile
}

func (f filesFS) Create(dir, name string, size uint64) (waltypes.WritableFile, error) {
	w, err := f.VFS.Create(dir, name, size)
	if err != nil {
		return nil, err
	}
	return f.wrap(filepath.Join(dir, name), w), nil
}

func (f filesFS) OpenWriter(dir, name string) (waltypes.WritableFile, error) {
	w, err := f.VFS.OpenWriter(dir, name)
	if err != nil {
		return nil, err
	}
	return f.wrap(filepath.Join(dir, name), w), nil
}

// noSyncFS is raft-wal's file system without fsync (Config.NoSync).
func noSyncFS(vfs waltypes.VFS) waltypes.VFS {
	return filesFS{vfs, func(_ string, f waltypes.WritableFile) waltypes.WritableFile { return noSyncFile{f} }}
}

type noSyncFile struct{ waltypes.WritableFile }

func (noSyncFile) Sync() error { return nil }

// monotonicLog keeps a wrapped log store (Config.WrapLogStore) monotonic
// for raft: raft-wal refuses a gap in the log, so after installing a
// snapshot raft must delete the whole log instead of leaving one.
type monotonicLog struct{ raft.LogStore }

func (monotonicLog) IsMonotonic() bool { return true }

// stopOnWriteError is the log as raft writes it. hashicorp/raft answers
// a failed append by leaving its idea of the log as it was, which is the
// disk's (a leader steps down, a follower refuses the entries, the
// writers hear of it: a full disk gives ErrDiskFull), with one exception
// that its source leaves open: a follower that truncated a conflicting
// tail and then failed to append keeps the old last index, which the disk
// no longer has, and refuses every append after it. An append that fails
// right after a truncation of the tail therefore stops the Raft node
// (Store.logWriteFailed), and the restart reads back what the disk holds.
type stopOnWriteError struct {
	raft.LogStore
	failed func(err error)
	// cut is set once the tail was truncated, until the next append.
	cut atomic.Bool
}

func (*stopOnWriteError) IsMonotonic() bool { return true }

func (l *stopOnWriteError) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }

func (l *stopOnWriteError) StoreLogs(logs []*raft.Log) error {
	err := l.LogStore.StoreLogs(logs)
	if l.cut.Swap(false) && err != nil {
		l.failed(fmt.Errorf("after truncating its tail: %w", err))
	}
	return err
}

func (l *stopOnWriteError) DeleteRange(min, max uint64) error {
	last, lerr := l.LogStore.LastIndex()
	err := l.LogStore.DeleteRange(min, max)
	if err == nil && lerr == nil && min <= last && max >= last {
		l.cut.Store(true)
	}
	return err
}
