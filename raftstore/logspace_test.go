package raftstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	walfs "github.com/hashicorp/raft-wal/fs"
	waltypes "github.com/hashicorp/raft-wal/types"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// fullDisk is the operating system's file system with a switch that fills
// the disk: then a new file cannot be preallocated (the empty file stays,
// as the OS file system leaves it) and writes to a file that was not
// preallocated fail. Writes inside a preallocated file still succeed, as
// they do on a real disk.
type fullDisk struct {
	waltypes.VFS
	full atomic.Bool
}

func (d *fullDisk) Create(dir, name string, size uint64) (waltypes.WritableFile, error) {
	if d.full.Load() && size > 0 {
		if w, err := d.VFS.Create(dir, name, 0); err == nil {
			w.Close()
		}
		return nil, &os.PathError{Op: "fallocate", Path: filepath.Join(dir, name), Err: syscall.ENOSPC}
	}
	w, err := d.VFS.Create(dir, name, size)
	if err != nil || size > 0 {
		return w, err
	}
	return growingFile{w, d}, nil
}

// growingFile is a file created without preallocation: each write past
// its end needs space.
type growingFile struct {
	waltypes.WritableFile
	disk *fullDisk
}

func (f growingFile) WriteAt(p []byte, off int64) (int, error) {
	if f.disk.full.Load() {
		// As a real disk may: part of the write lands before space runs out.
		n, err := f.WritableFile.WriteAt(p[:len(p)/2], off)
		if err != nil {
			return n, err
		}
		return n, syscall.ENOSPC
	}
	return f.WritableFile.WriteAt(p, off)
}

// TestLogKeepsWorkingAfterTheDiskFillsUp: the disk fills up before the
// log rotates to a new segment, which cannot be preallocated. The
// rotation still happens; appends fail with the disk's error while it is
// full (not with a sealed segment, which would last until a restart), and
// succeed again, losing nothing, once space is freed; the log reopens
// whole.
func TestLogKeepsWorkingAfterTheDiskFillsUp(t *testing.T) {
	dir := t.TempDir()
	disk := &fullDisk{VFS: walfs.New()}
	open := func() *logStore {
		w, err := openLog(logOptions{Dir: dir, Member: "agent-7", SegmentSize: 64 << 10, fs: disk})
		if err != nil {
			t.Fatalf("open log: %v", err)
		}
		return w
	}
	w := open()
	defer func() { w.Close() }()
	storeTestLogs(t, w, 1, 100, 10)

	disk.full.Store(true)
	next := uint64(101)
	var failed error
	for ; next < 2000; next++ {
		if failed = w.StoreLogs([]*raft.Log{testLogEntry(next)}); failed != nil {
			break
		}
	}
	if !errors.Is(failed, syscall.ENOSPC) {
		t.Fatalf("appending while the disk is full, entry %d: %v; want the disk's no-space error", next, failed)
	}
	if segs := segmentFiles(t, dir); len(segs) != 2 {
		t.Fatalf("segment files %v: want the first and the one rotated to", segs)
	}
	if err := w.StoreLogs([]*raft.Log{testLogEntry(next)}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("retrying entry %d while the disk is full: %v; want no-space again", next, err)
	}

	// The agent restarts while the disk is still full: the half-written
	// batch is at the end of the segment, which was never preallocated.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = open()
	checkTestLogs(t, w, 1, next-1)

	disk.full.Store(false)
	storeTestLogs(t, w, next, next+200, 10)
	checkTestLogs(t, w, 1, next+200)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = open()
	checkTestLogs(t, w, 1, next+200)
}

// noSpaceLog fails appends with the disk's no-space error while full is
// set, as the log does when its segment cannot grow (lowSpaceFS).
type noSpaceLog struct {
	raft.LogStore
	full *atomic.Bool
}

func (l noSpaceLog) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }

func (l noSpaceLog) StoreLogs(logs []*raft.Log) error {
	if l.full.Load() {
		return &os.PathError{Op: "write", Path: "00000000000000005272-0000000000000001.wal", Err: syscall.ENOSPC}
	}
	return l.LogStore.StoreLogs(logs)
}

// TestAWriteTheLeaderCannotStoreForLackOfSpaceSaysDiskFull: a write the
// leader's log cannot store answers ErrDiskFull (not an internal error),
// nothing of it is applied, and once there is room again a leader is
// elected and writes succeed, the earlier ones all still there.
func TestAWriteTheLeaderCannotStoreForLackOfSpaceSaysDiskFull(t *testing.T) {
	var full atomic.Bool
	stores := openCluster(t, 1, func(_ int, cfg *Config) {
		cfg.WrapLogStore = func(l raft.LogStore) raft.LogStore { return noSpaceLog{l, &full} }
	})
	s := leaderOf(t, stores)
	mustStoreApply(t, s, registerCmd(testInstance("api", "before", "n1")))

	full.Store(true)
	_, err := s.Apply(t.Context(), registerCmd(testInstance("api", "lost", "n1")))
	if !errors.Is(err, apierr.ErrDiskFull) || !strings.Contains(err.Error(), "not applied") {
		t.Fatalf("a write the log cannot store: %v, want ErrDiskFull saying it was not applied", err)
	}

	full.Store(false)
	testwait.For(t, 10*time.Second, "a write to succeed once there is room", func() bool {
		_, err := s.Apply(t.Context(), registerCmd(testInstance("api", "after", "n1")))
		return err == nil
	})
	insts, _ := s.FSM().Instances("api")
	var ids []string
	for _, in := range insts {
		ids = append(ids, in.Id)
	}
	if fmt.Sprint(ids) != "[after before]" {
		t.Fatalf("instances %v, want [after before]: the write refused for lack of space must not be applied", ids)
	}
}

// TestUnfinishedSnapshotsAreRemovedAtStart: the directories raft's
// snapshot store leaves behind when a snapshot fails before its metadata
// is written go; finished snapshots and anything else stay.
func TestUnfinishedSnapshotsAreRemovedAtStart(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"2-9193-1796328831460.tmp", "2-9193-1796328890643"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, d, "meta.json"), []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.tmp"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	removeUnfinishedSnapshots(dir, slog.New(slog.DiscardHandler))
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if fmt.Sprint(names) != "[2-9193-1796328890643 notes.tmp]" {
		t.Fatalf("left %v, want the finished snapshot and the plain file", names)
	}
	removeUnfinishedSnapshots(filepath.Join(dir, "absent"), slog.New(slog.DiscardHandler)) // no directory yet: nothing to do
}
