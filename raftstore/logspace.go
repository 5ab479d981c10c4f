package raftstore

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
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
	w, err2 := f.VFS.Create(dir, name, 0)
	if err2 != nil {
		return nil, err2
	}
	f.log.Warn("disk nearly full: started a Raft log segment without preallocating it; Raft writes fail while the disk stays full and resume once space is freed",
		"dir", dir, "segment", name, "wanted_bytes", size, "err", err)
	return w, nil
}
