package raftstore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Recover's dry run reads the Raft state the way the recovery does,
// through raft-wal and raft's file snapshot store, so that it reports the
// log's end and configuration the recovery will find. Neither of those
// only reads: raft-wal commits to wal-meta.db when it opens the log (and
// may end a torn tail of the last segment), and the snapshot store
// creates its directory and probes it by creating a file. A dry run is
// run on every surviving agent before one is chosen, and must leave each
// of them as it was; so it opens a private copy of the log and the
// snapshots, made in the temporary directory ($TMPDIR) and removed
// afterwards. The files are copied, not hard-linked: a link would share
// the very files that opening writes. A second reader of raft-wal's files
// that only reads would report where it thinks the log ends, which
// raft-wal might not agree with.

// dryRunCopyPrefix starts the name of a dry run's copy of the Raft state.
const dryRunCopyPrefix = "zrpc-recover-dry-run-"

// snapshotsDirName is raft's file snapshot store's directory under the
// Raft dir.
const snapshotsDirName = "snapshots"

// copyRaftState copies the Raft log and snapshots of the Raft dir dir into
// a new temporary directory, which it returns; the caller removes it.
// Unfinished snapshots (raft reads none) are left out.
func copyRaftState(dir string) (string, error) {
	tmp, err := os.MkdirTemp("", dryRunCopyPrefix+"*")
	if err != nil {
		return "", fmt.Errorf("dry run: make a directory for a copy of the Raft state of %s: %w; "+
			"the dry run reads a copy, made in $TMPDIR (or /tmp): set TMPDIR to a writable directory", dir, err)
	}
	for _, sub := range []string{walDirName, snapshotsDirName} {
		if err := copyTree(filepath.Join(dir, sub), filepath.Join(tmp, sub)); err != nil {
			_ = os.RemoveAll(tmp)
			return "", fmt.Errorf("dry run: copy the Raft state of %s to %s: %w; "+
				"the dry run reads a copy of %s and %s, made in $TMPDIR (or /tmp): set TMPDIR to a directory with room for them",
				dir, tmp, err, filepath.Join(dir, walDirName), filepath.Join(dir, snapshotsDirName))
		}
	}
	return tmp, nil
}

// copyTree copies the directories and regular files under src (following
// a symbolic link at src itself) to dst; a missing src copies nothing.
func copyTree(src, dst string) error {
	root, err := filepath.EvalSymlinks(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		switch {
		case d.IsDir() && strings.HasSuffix(d.Name(), ".tmp") && path != root:
			return fs.SkipDir // an unfinished snapshot
		case d.IsDir():
			return os.Mkdir(to, 0o700)
		default:
			return copyFile(path, to)
		}
	})
}

// copyFile copies the regular file at src (through a symbolic link) to
// dst; anything else is left out.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

// movedErr is an error about a dry run's copy of the Raft state, told as
// about the files it copied: the operator acts on those.
type movedErr struct {
	err      error
	copy, at string
}

func (e *movedErr) Error() string { return strings.ReplaceAll(e.err.Error(), e.copy, e.at) }
func (e *movedErr) Unwrap() error { return e.err }
