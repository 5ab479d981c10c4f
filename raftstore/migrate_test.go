package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// legacyContents reads every entry and stable value of a raft.db.
func legacyContents(t *testing.T, path string) ([]*raft.Log, map[string][]byte) {
	t.Helper()
	old, err := openLegacyLog(path, "")
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	var entries []*raft.Log
	if _, err := old.forEachBatch(100, func(b []*raft.Log) error { entries = append(entries, b...); return nil }); err != nil {
		t.Fatal(err)
	}
	stable, err := old.stable()
	if err != nil {
		t.Fatal(err)
	}
	return entries, stable
}

// checkMigrated checks that the WAL in dir holds exactly the entries and
// stable values of the raft.db they came from.
func checkMigrated(t *testing.T, dir string, entries []*raft.Log, stable map[string][]byte) {
	t.Helper()
	w, err := openLog(logOptions{Dir: filepath.Join(dir, walDirName)})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if first, err := w.FirstIndex(); err != nil || first != 1 {
		t.Errorf("FirstIndex = %d, %v; want 1", first, err)
	}
	if last, err := w.LastIndex(); err != nil || last != fixtureLast {
		t.Errorf("LastIndex = %d, %v; want %d", last, err, fixtureLast)
	}
	configs := 0
	for _, want := range entries {
		var got raft.Log
		if err := w.GetLog(want.Index, &got); err != nil {
			t.Fatalf("GetLog(%d): %v", want.Index, err)
		}
		if d := boltLogDiff(want, &got); d != "" {
			t.Errorf("entry %d: %s", want.Index, d)
		}
		if got.Type == raft.LogConfiguration {
			configs++
		}
	}
	if configs != 1 {
		t.Errorf("%d configuration entries, want 1", configs)
	}
	for _, key := range []string{"CurrentTerm", "LastVoteTerm"} {
		if v, err := w.GetUint64([]byte(key)); err != nil || v != fixtureTerm {
			t.Errorf("%s = %d, %v; want %d", key, v, err, fixtureTerm)
		}
	}
	if v, err := w.Get([]byte("LastVoteCand")); err != nil || len(v) == 0 || !bytes.Equal(v, stable["LastVoteCand"]) {
		t.Errorf("LastVoteCand = %q, %v; want %q", v, err, stable["LastVoteCand"])
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestMigrationKeepsEveryEntryTermAndVote: an agent's raft.db from before
// raft-wal is copied into raft/wal at start, and a store over it restores
// the configuration, elects itself and serves the registry it held.
func TestMigrationKeepsEveryEntryTermAndVote(t *testing.T) {
	dir := t.TempDir()
	entries, stable := legacyContents(t, legacyFixture(t, dir))
	if len(entries) != fixtureLast {
		t.Fatalf("fixture has %d entries, want %d", len(entries), fixtureLast)
	}
	var logs bytes.Buffer
	if err := migrateLegacyLog(dir, "n1", slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	t.Log(logs.String())
	if lines := strings.Split(strings.TrimSpace(logs.String()), "\n"); len(lines) != 1 ||
		!strings.Contains(lines[0], "level=INFO") || !strings.Contains(lines[0], "entries=301 first_index=1 last_index=301") {
		t.Errorf("the migration's log is not one INFO line saying what it migrated:\n%s", logs.String())
	}
	if fileExists(filepath.Join(dir, legacyLogFile)) || !fileExists(filepath.Join(dir, migratedLogFile)) {
		t.Errorf("raft.db not renamed to %s", migratedLogFile)
	}
	checkMigrated(t, dir, entries, stable)

	cfg := testStoreConfig(t, dir, slog.LevelInfo)
	s := openStore(t, New(cfg))
	if !s.HadState() {
		t.Error("HadState = false for a migrated log")
	}
	eventually(t, 10*time.Second, "the registry replayed", func() bool {
		return s.FSM().Instance("api", fmt.Sprint(fixtureInstances)) != nil
	})
	for i := 1; i <= fixtureInstances; i++ {
		if s.FSM().Instance("api", fmt.Sprint(i)) == nil {
			t.Fatalf("instance api/%d missing after the migration", i)
		}
	}
	mustStoreApply(t, s, registerCmd(testInstance("api", "after", "n1")))
}

// TestStoreOpenMigratesRaftDB: Store.Open migrates by itself.
func TestStoreOpenMigratesRaftDB(t *testing.T) {
	dir := t.TempDir()
	legacyFixture(t, dir)
	s := openStore(t, New(testStoreConfig(t, dir, slog.LevelInfo)))
	eventually(t, 10*time.Second, "the registry replayed", func() bool {
		return s.FSM().Instance("api", fmt.Sprint(fixtureInstances)) != nil
	})
	if fileExists(filepath.Join(dir, legacyLogFile)) || !fileExists(filepath.Join(dir, walDirName, walMetaFile)) {
		t.Error("Store.Open did not migrate raft.db")
	}
}

// TestMigrationInterruptedBeforeItsRenameIsRedone: a crash while the WAL
// was being built leaves raft.db in use and a temporary directory, which
// the next start discards and builds again.
func TestMigrationInterruptedBeforeItsRenameIsRedone(t *testing.T) {
	dir := t.TempDir()
	entries, stable := legacyContents(t, legacyFixture(t, dir))
	tmp := filepath.Join(dir, migratingDirName)
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	w := mustOpenTestLog(t, tmp) // half a migration: other entries, no stable values
	storeTestLogs(t, w, 1, 20, 5)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "00000000000000000099-0000000000000009.wal.tmp"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := migrateLegacyLog(dir, "n1", slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if fileExists(tmp) {
		t.Errorf("%s is still there", tmp)
	}
	checkMigrated(t, dir, entries, stable)
}

// TestMigrationInterruptedBeforeRaftDBIsRenamedIsFinished: a crash after
// the WAL was renamed into place but before raft.db was renamed leaves
// both; the stamp in wal/ shows raft.db is the file it came from, so the
// next start finishes. Any other raft.db next to wal/ is refused, naming
// both and changing nothing.
func TestMigrationInterruptedBeforeRaftDBIsRenamedIsFinished(t *testing.T) {
	dir := t.TempDir()
	legacy := legacyFixture(t, dir)
	entries, stable := legacyContents(t, legacy)
	quiet := slog.New(slog.DiscardHandler)
	if err := migrateLegacyLog(dir, "n1", quiet); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, migratedLogFile), legacy); err != nil {
		t.Fatal(err)
	}
	if err := migrateLegacyLog(dir, "n1", quiet); err != nil {
		t.Fatalf("finishing the migration: %v", err)
	}
	if fileExists(legacy) || !fileExists(filepath.Join(dir, migratedLogFile)) {
		t.Error("raft.db not renamed")
	}
	checkMigrated(t, dir, entries, stable)

	// Another raft.db: copied back by hand, or from another agent.
	legacyFixture(t, dir)
	if err := os.Chtimes(legacy, time.Now(), time.Unix(1600000000, 0)); err != nil {
		t.Fatal(err)
	}
	before := snapshotDir(t, dir)
	err := migrateLegacyLog(dir, "n1", quiet)
	if err == nil {
		t.Fatal("a raft.db next to a wal/ it was not migrated to was accepted")
	}
	t.Log(err)
	if !errors.Is(err, ErrCorruptStore) {
		t.Errorf("err = %v, want ErrCorruptStore", err)
	}
	for _, want := range []string{legacy, filepath.Join(dir, walDirName), "move " + legacy + " away", "zrpcctl raft remove-peer n1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %q, want it to say %q", err, want)
		}
	}
	if after := snapshotDir(t, dir); !mapsEqual(before, after) {
		t.Error("the refused migration changed the data dir")
	}
}

// TestMigratedRaftDBIsDeletedAfterASnapshot: raft.db.migrated is kept
// until Raft has taken a snapshot, which holds everything it held.
func TestMigratedRaftDBIsDeletedAfterASnapshot(t *testing.T) {
	dir := t.TempDir()
	legacyFixture(t, dir)
	cfg := testStoreConfig(t, dir, slog.LevelInfo)
	cfg.SnapshotThreshold = 1
	cfg.SnapshotInterval = 50 * time.Millisecond
	s := openStore(t, New(cfg))
	eventually(t, 10*time.Second, "the registry replayed", func() bool {
		return s.FSM().Instance("api", fmt.Sprint(fixtureInstances)) != nil
	})
	mustStoreApply(t, s, registerCmd(testInstance("api", "after", "n1")))
	migrated := filepath.Join(dir, migratedLogFile)
	eventually(t, 10*time.Second, "raft.db.migrated deleted by a snapshot", func() bool { return !fileExists(migrated) })
	snaps, err := raft.NewFileSnapshotStore(dir, 1, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if list, err := snaps.List(); err != nil || len(list) == 0 {
		t.Errorf("snapshots %v, %v; want one taken before raft.db.migrated was deleted", list, err)
	}
}

// TestMigrationOfAnUndecodableRaftDBIsRefused: a raft.db whose pages are
// sound but whose entries do not decode (or leave a gap) is refused with
// the rejoin advice; raft.db is left as it was and no wal/ is made.
func TestMigrationOfAnUndecodableRaftDBIsRefused(t *testing.T) {
	key := func(i uint64) string { return string(binary.BigEndian.AppendUint64(nil, i)) }
	good := func(i uint64) string { return string(encodeLog(nil, testLogEntry(i))) }
	tests := []struct {
		name    string
		entries map[string]string
		want    string
	}{
		{"garbage entry", map[string]string{key(1): good(1), key(2): "garbage"}, "entry 2"},
		{"entry under another index", map[string]string{key(1): good(1), key(2): good(3)}, "has index 3"},
		{"gap", map[string]string{key(1): good(1), key(3): good(3)}, "not contiguous"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			legacy := filepath.Join(dir, legacyLogFile)
			writeBoltFile(t, legacy, func(tx *bbolt.Tx) error {
				if err := putBolt(tx, "meta", "format", formatMarker); err != nil {
					return err
				}
				if err := putBolt(tx, "conf", "CurrentTerm", key(2)); err != nil {
					return err
				}
				for k, v := range tc.entries {
					if err := putBolt(tx, "logs", k, v); err != nil {
						return err
					}
				}
				return nil
			})
			before := snapshotDir(t, dir)
			err := migrateLegacyLog(dir, "agent-7", slog.New(slog.DiscardHandler))
			if err == nil {
				t.Fatal("migrated an undecodable raft.db")
			}
			t.Log(err)
			for _, want := range []string{"raft log " + legacy + " is corrupt", tc.want, "zrpcctl raft remove-peer agent-7"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err = %q, want it to say %q", err, want)
				}
			}
			if !errors.Is(err, ErrCorruptStore) {
				t.Errorf("err = %v, want ErrCorruptStore", err)
			}
			if after := snapshotDir(t, dir); !mapsEqual(before, after) || fileExists(filepath.Join(dir, walDirName)) || fileExists(filepath.Join(dir, migratingDirName)) {
				t.Error("the refused migration changed the data dir")
			}
		})
	}
}
