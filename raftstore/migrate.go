package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/hashicorp/raft"
)

// Migration of raft.db (boltstore.go) to raft-wal, run by Store.Open:
//
//  1. the WAL is built under <Dir>/wal.migrating (removed first: a crash
//     leaves it behind and the next start redoes it), with every entry of
//     raft.db, every stable value and the stamp of raft.db (migratedFrom);
//  2. it is closed, fsynced and renamed to <Dir>/wal;
//  3. raft.db is renamed to raft.db.migrated, which the first snapshot
//     taken after the migration deletes.
//
// A crash before step 2 leaves raft.db in use; one between 2 and 3 leaves
// both, and the stamp in wal/ tells that raft.db is the file it was built
// from, so the next start finishes step 3. Any other raft.db next to a
// wal/ is refused.
const (
	migratingDirName = "wal.migrating"
	migratedLogFile  = "raft.db.migrated"
	migratedFrom     = "migrated-from"
	migrateBatch     = 1024
)

// migrateLegacyLog migrates dir/raft.db to dir/wal if there is one and no
// wal yet.
func migrateLegacyLog(dir, member string, log *slog.Logger) error {
	legacy := filepath.Join(dir, legacyLogFile)
	walDir := filepath.Join(dir, walDirName)
	tmp := filepath.Join(dir, migratingDirName)
	stamp, err := legacyStamp(legacy)
	if err != nil {
		return fmt.Errorf("open raft log: %w", err)
	}
	_, err = os.Stat(walDir)
	walExists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("open raft log: %w", err)
	}
	switch {
	case stamp == "":
		return removeStale(tmp)
	case walExists:
		if recorded, err := os.ReadFile(filepath.Join(walDir, migratedFrom)); err != nil || string(recorded) != stamp {
			return fmt.Errorf("%w: %s (the Raft log before raft-wal) and %s (the Raft log it is migrated to) both exist, and %s was not migrated to it; "+
				"this agent will not guess which holds its log: if the agent ran on %s since, move %s away; "+
				"otherwise restore the data dir from a backup, or remove it and rejoin as a new member (zrpcctl raft remove-peer %s on the cluster first)",
				ErrCorruptStore, legacy, walDir, legacyLogFile, walDirName, legacy, memberName(member))
		}
		if err := retireLegacy(dir); err != nil {
			return err
		}
		log.Info("finished the migration of raft.db to raft-wal that a crash interrupted", "kept_until_next_snapshot", filepath.Join(dir, migratedLogFile))
		return nil
	}

	old, err := openLegacyLog(legacy, member)
	if err != nil {
		return err
	}
	defer old.Close()
	if err := removeStale(tmp); err != nil {
		return err
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("migrate raft log: %w", err)
	}
	r, stable, err := copyLegacyLog(old, tmp, member, log)
	if err == nil {
		err = writeFileSynced(filepath.Join(tmp, migratedFrom), []byte(stamp))
	}
	if err == nil {
		err = syncTree(tmp)
	}
	if err == nil {
		err = renameSynced(tmp, walDir)
	}
	if err != nil {
		_ = os.RemoveAll(tmp) // the next start would
		if errors.Is(err, ErrCorruptStore) {
			return corruptErr(legacy, member, strings.ReplaceAll(err.Error(), ErrCorruptStore.Error()+": ", ""))
		}
		return fmt.Errorf("migrate raft log %s to %s: %w", legacy, walDir, err)
	}
	if err := retireLegacy(dir); err != nil {
		return err
	}
	log.Info("migrated the Raft log from raft.db to raft-wal", "entries", r.entries, "first_index", r.first, "last_index", r.last,
		"stable_values", stable, "from", legacy, "to", walDir, "kept_until_next_snapshot", filepath.Join(dir, migratedLogFile))
	return nil
}

func memberName(member string) string {
	if member == "" {
		return "NAME"
	}
	return member
}

// copyLegacyLog writes old's entries and stable values into a new WAL in
// dir and closes it; it returns what it copied.
func copyLegacyLog(old *legacyLog, dir, member string, log *slog.Logger) (legacyRange, int, error) {
	// No fsync per batch: the whole directory is fsynced before it is
	// renamed into place.
	w, err := openLog(logOptions{Dir: dir, NoSync: true, Member: member, Logger: log})
	if err != nil {
		return legacyRange{}, 0, err
	}
	r, err := old.forEachBatch(migrateBatch, w.StoreLogs)
	var stable map[string][]byte
	if err == nil {
		stable, err = old.stable()
	}
	for k, v := range stable {
		if err != nil {
			break
		}
		if legacyUint64Keys[k] && len(v) == 8 {
			err = w.SetUint64([]byte(k), binary.BigEndian.Uint64(v))
		} else {
			err = w.Set([]byte(k), v)
		}
	}
	if err == nil {
		err = checkCopied(w, r)
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return r, len(stable), err
}

// checkCopied checks that w holds the range r of entries.
func checkCopied(w *logStore, r legacyRange) error {
	first, err := w.FirstIndex()
	if err != nil {
		return err
	}
	last, err := w.LastIndex()
	if err != nil {
		return err
	}
	if first != r.first || last != r.last {
		return fmt.Errorf("the new log holds entries %d..%d, raft.db %d..%d", first, last, r.first, r.last)
	}
	return nil
}

// retireLegacy renames raft.db to raft.db.migrated.
func retireLegacy(dir string) error {
	if err := renameSynced(filepath.Join(dir, legacyLogFile), filepath.Join(dir, migratedLogFile)); err != nil {
		return fmt.Errorf("migrate raft log: %w", err)
	}
	return nil
}

// removeStale removes what an interrupted migration left.
func removeStale(tmp string) error {
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("remove the unfinished raft log migration %s: %w", tmp, err)
	}
	return nil
}

func writeFileSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// syncTree fsyncs every file in dir and dir itself.
func syncTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := syncPath(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return syncPath(dir)
}

func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// renameSynced renames and fsyncs the parent directory.
func renameSynced(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	return syncPath(filepath.Dir(to))
}

// retiringSnapshots deletes raft.db.migrated (and the stamp of the
// migration) once a snapshot has been written after the migration: from
// then on Raft restores from the snapshot and needs no entry the old file
// held.
type retiringSnapshots struct {
	raft.SnapshotStore
	retire func()
}

func newRetiringSnapshots(snaps raft.SnapshotStore, dir string, log *slog.Logger) raft.SnapshotStore {
	var once sync.Once
	retire := func() {
		once.Do(func() {
			old := filepath.Join(dir, migratedLogFile)
			if err := os.Remove(old); err != nil && !errors.Is(err, fs.ErrNotExist) {
				log.Warn("could not delete the Raft log from before raft-wal", "path", old, "err", err)
				return
			}
			_ = os.Remove(filepath.Join(dir, walDirName, migratedFrom))
			log.Info("deleted the Raft log from before raft-wal: a snapshot holds its state", "path", old)
		})
	}
	return &retiringSnapshots{SnapshotStore: snaps, retire: retire}
}

func (s *retiringSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &retiringSink{SnapshotSink: sink, retire: s.retire}, nil
}

type retiringSink struct {
	raft.SnapshotSink
	retire func()
}

func (s *retiringSink) Close() error {
	if err := s.SnapshotSink.Close(); err != nil {
		return err
	}
	s.retire()
	return nil
}
