package raftstore

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	waltypes "github.com/hashicorp/raft-wal/types"
)

// A full disk must not stop the Raft log for good. raft-wal preallocates
// each new segment when it rotates to it; when that fails, its rotation
// fails and the WAL refuses every later append (ErrSealed) until it is
// reopened: an agent whose disk filled up once would store no Raft entry
// again, leader or follower, even after space was freed, until restarted.
// lowSpaceFS creates the segment without preallocating it instead, so the
// rotation succeeds; appends then fail while the disk stays full (raft-wal
// rolls a failed append back, and raft answers the write with the error,
// the leader stepping down) and succeed again once there is room.
//
// Such a segment grows with each append, so a failed or torn append can
// leave its file ending in part of a batch, where a preallocated one would
// end in zeros; checkSegment refuses a shorter file that does not end at a
// batch (a preallocated file cut short). An empty marker file,
// <segment>.unallocated, created (and its directory fsynced) before the
// segment, tells it the file grows: its end is then taken as raft-wal
// takes it, a torn batch ending the log.

// lowSpaceFS is raft-wal's file system, creating segments unpreallocated
// when the disk has no room for a whole one.
type lowSpaceFS struct {
	waltypes.VFS
	log *slog.Logger
}

func (f lowSpaceFS) Create(dir, name string, size uint64) (waltypes.WritableFile, error) {
	w, err := f.VFS.Create(dir, name, size)
	if err == nil || size == 0 || !errors.Is(err, syscall.ENOSPC) {
		return w, err
	}
	// The file system leaves the empty file it made (exclusively: it is
	// this call's) and could not preallocate.
	if rmErr := os.Remove(filepath.Join(dir, name)); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) {
		return nil, err
	}
	if markErr := markUnallocated(dir, name); markErr != nil {
		return nil, fmt.Errorf("%w (and marking the segment unpreallocated: %v)", err, markErr)
	}
	w, err2 := f.VFS.Create(dir, name, 0)
	if err2 != nil {
		return nil, err2
	}
	f.log.Warn("disk nearly full: started a Raft log segment without preallocating it; Raft writes fail while the disk stays full and resume once space is freed",
		"dir", dir, "segment", name, "wanted_bytes", size, "err", err)
	return w, nil
}

// Delete deletes a segment and its unallocated marker, if any.
func (f lowSpaceFS) Delete(dir, name string) error {
	if err := f.VFS.Delete(dir, name); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, name+unallocatedExt)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		f.log.Warn("could not remove a deleted Raft log segment's marker", "err", err)
	}
	return nil
}

// unallocatedExt ends the name of the marker of a segment created without
// preallocation.
const unallocatedExt = ".unallocated"

// markUnallocated durably marks segment name in dir as created without
// preallocation.
func markUnallocated(dir, name string) error {
	f, err := os.OpenFile(filepath.Join(dir, name+unallocatedExt), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return syncPath(dir)
}

// removeUnfinishedSnapshots removes the <name>.tmp directories raft's
// snapshot store leaves in dir when a snapshot fails before it is written
// (it cannot write the metadata: a full disk), one per failed attempt;
// raft skips them and never removes them. At start no snapshot is being
// written.
func removeUnfinishedSnapshots(dir string, log *slog.Logger) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return // none yet
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			log.Warn("could not remove an unfinished Raft snapshot", "dir", filepath.Join(dir, e.Name()), "err", err)
			continue
		}
		log.Info("removed an unfinished Raft snapshot", "dir", filepath.Join(dir, e.Name()))
	}
}
