package raftstore

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRecoverRefusesWhatItCannotRecover: a data dir without Raft state, and
// a request that does not name this agent and its address, are refused
// without writing anything.
func TestRecoverRefusesWhatItCannotRecover(t *testing.T) {
	dir := t.TempDir()
	cfg := testStoreConfig(t, dir, slog.LevelWarn)
	self := Server{ID: "n1", Address: "127.0.0.1:8401", Suffrage: Voter}
	if _, err := Recover(cfg, self, false); !errors.Is(err, ErrNoRaftState) {
		t.Errorf("recover of a data dir that never held Raft state: %v, want %v", err, ErrNoRaftState)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("recover wrote into a data dir it refused: %v", entries)
	}
	if err := os.Mkdir(filepath.Join(dir, walDirName), 0o700); err != nil {
		t.Fatal(err)
	}
	before := digestDir(t, dir)
	if _, err := Recover(cfg, self, true); !errors.Is(err, ErrNoRaftState) || !strings.Contains(err.Error(), dir) {
		t.Errorf("dry run of an empty log: %v, want %v naming %s", err, ErrNoRaftState, dir)
	}
	if after := digestDir(t, dir); !maps.Equal(before, after) {
		t.Errorf("a dry run refused changed the data dir:\n%s", digestDiff(before, after))
	}
	if _, err := Recover(cfg, self, false); !errors.Is(err, ErrNoRaftState) {
		t.Errorf("recover of an empty log: %v, want %v", err, ErrNoRaftState)
	}
	for _, bad := range []Server{{ID: "n2", Address: "127.0.0.1:8401"}, {ID: "n1"}} {
		if _, err := Recover(cfg, bad, false); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("recover as %+v for agent n1: %v, want %v", bad, err, ErrInvalidArgument)
		}
	}
}

// TestRecoverDryRunLeavesTheDataDirAsItWas: a dry run only reads. It is run
// on every surviving agent to choose the one to recover, so each of those
// must keep its state byte for byte, a torn tail of its last segment
// included (the log raft-wal opens for writing would end it there), and
// no file may appear (the snapshot store made on open creates its
// directory and probes it). It still reports the configuration and how far
// the log goes, as the recovery then finds them.
func TestRecoverDryRunLeavesTheDataDirAsItWas(t *testing.T) {
	for _, tc := range []struct {
		name     string
		snapshot bool
	}{
		{"log only, torn tail", false},
		{"snapshot and compacted log, torn tail", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testStoreConfig(t, dir, slog.LevelWarn)
			cfg.TrailingLogs = 4
			s := openStore(t, New(cfg))
			for i := range 20 {
				mustStoreApply(t, s, registerCmd(testInstance("api", fmt.Sprint(i), "n1")))
				if i == 10 && tc.snapshot {
					if err := s.raft.Snapshot().Error(); err != nil {
						t.Fatalf("snapshot: %v", err)
					}
				}
			}
			lastIndex := s.raft.LastIndex()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if !tc.snapshot {
				if err := os.RemoveAll(filepath.Join(dir, snapshotsDirName)); err != nil {
					t.Fatal(err)
				}
			}
			segs := segmentFiles(t, filepath.Join(dir, walDirName))
			tail := segs[len(segs)-1]
			at := (writtenEnd(t, tail) + 7) &^ 7
			editFile(t, tail, func(b []byte) []byte {
				copy(b[at:], append([]byte{segFrameEntry, 0, 0, 0, 200, 0, 0, 0}, bytes.Repeat([]byte("x"), 90)...))
				return b
			})

			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp) // where the dry run copies the Raft state
			before := digestDir(t, dir)
			self := Server{ID: "n1", Address: "127.0.0.1:8401", Suffrage: Voter}
			rep, err := Recover(cfg, self, true)
			if err != nil {
				t.Fatalf("dry run: %v", err)
			}
			if after := digestDir(t, dir); !maps.Equal(before, after) {
				t.Errorf("the dry run changed the data dir:\n%s", digestDiff(before, after))
			}
			if rep.LastIndex != lastIndex || rep.LastTerm == 0 || len(rep.Previous) != 1 || rep.Previous[0].ID != "n1" {
				t.Errorf("dry run report: last index %d term %d, peers %+v; want last index %d and peer n1",
					rep.LastIndex, rep.LastTerm, rep.Previous, lastIndex)
			}
			if left, _ := os.ReadDir(tmp); len(left) > 0 {
				t.Errorf("the dry run left its copy of the Raft state behind in %s: %v", tmp, left)
			}

			got, err := Recover(cfg, self, false)
			if err != nil {
				t.Fatalf("recover: %v", err)
			}
			if got.LastIndex != rep.LastIndex || got.LastTerm != rep.LastTerm || got.Instances != 20 {
				t.Errorf("recovery found the log ending at %d (term %d) and %d instances; the dry run at %d (term %d), 20 were registered",
					got.LastIndex, got.LastTerm, got.Instances, rep.LastIndex, rep.LastTerm)
			}
		})
	}
}

// TestRecoverDryRunErrorsNameTheDataDir: the dry run reads a copy of the
// Raft state, but what it finds wrong is told of the agent's own files,
// which the operator must act on, and the copy is removed.
func TestRecoverDryRunErrorsNameTheDataDir(t *testing.T) {
	dir := t.TempDir()
	cfg := testStoreConfig(t, dir, slog.LevelWarn)
	s := openStore(t, New(cfg))
	mustStoreApply(t, s, registerCmd(testInstance("api", "1", "n1")))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	meta := filepath.Join(dir, walDirName, walMetaFile)
	editFile(t, meta, func(b []byte) []byte { return b[:100] })

	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	_, err := Recover(cfg, Server{ID: "n1", Address: "127.0.0.1:8401", Suffrage: Voter}, true)
	if !errors.Is(err, ErrCorruptStore) || !strings.Contains(err.Error(), meta) || strings.Contains(err.Error(), tmp) {
		t.Errorf("dry run of a damaged %s: %v; want %v naming that file, not the copy in %s", walMetaFile, err, ErrCorruptStore, tmp)
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("the dry run left its copy of the Raft state behind in %s: %v", tmp, left)
	}
}

// digestDir returns, for every file and directory under dir, its type,
// size and the SHA-256 of its contents, by path relative to dir.
func digestDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			out[rel] = "dir"
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		out[rel] = fmt.Sprintf("%v %d bytes sha256 %x", d.Type(), len(b), sha256.Sum256(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func digestDiff(before, after map[string]string) string {
	var b strings.Builder
	for _, p := range slices.Sorted(maps.Keys(before)) {
		if a, ok := after[p]; !ok {
			fmt.Fprintf(&b, "  %s: removed\n", p)
		} else if a != before[p] {
			fmt.Fprintf(&b, "  %s: %s, was %s\n", p, a, before[p])
		}
	}
	for _, p := range slices.Sorted(maps.Keys(after)) {
		if _, ok := before[p]; !ok {
			fmt.Fprintf(&b, "  %s: created (%s)\n", p, after[p])
		}
	}
	return b.String()
}

// TestRecoverClearsTheKeptCommitIndex: a commit index a leader told the
// agent before the outage (votegate.go) belongs to the history recovery
// gives up; the recovered agent keeps none.
func TestRecoverClearsTheKeptCommitIndex(t *testing.T) {
	dir := t.TempDir()
	cfg := testStoreConfig(t, dir, slog.LevelWarn)
	s := openStore(t, New(cfg))
	mustStoreApply(t, s, registerCmd(testInstance("api", "a", "n1")))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	kept := func() uint64 {
		t.Helper()
		logs, err := openLog(logOptions{Dir: filepath.Join(dir, walDirName)})
		if err != nil {
			t.Fatal(err)
		}
		defer logs.Close()
		v, err := logs.GetUint64(commitFloorKey)
		if err != nil {
			t.Fatal(err)
		}
		term, err := logs.GetUint64(commitFloorTermKey)
		if err != nil {
			t.Fatal(err)
		}
		return v + term
	}
	logs, err := openLog(logOptions{Dir: filepath.Join(dir, walDirName)})
	if err != nil {
		t.Fatal(err)
	}
	if err := keepCommitted(logs, committedEntry{index: 1000, term: 7}); err != nil {
		t.Fatal(err)
	}
	logs.Close()
	if got := kept(); got != 1007 {
		t.Fatalf("kept index and term %d in all before the recovery, want 1007", got)
	}
	if _, err := Recover(cfg, Server{ID: "n1", Address: "127.0.0.1:8401", Suffrage: Voter}, false); err != nil {
		t.Fatalf("recover: %v", err)
	}
	if got := kept(); got != 0 {
		t.Errorf("the recovered agent keeps a commit index and term (%d in all) of the history it gave up", got)
	}
}
