package raftstore

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
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
	if _, err := Recover(cfg, self, false); !errors.Is(err, ErrNoRaftState) {
		t.Errorf("recover of an empty log: %v, want %v", err, ErrNoRaftState)
	}
	for _, bad := range []Server{{ID: "n2", Address: "127.0.0.1:8401"}, {ID: "n1"}} {
		if _, err := Recover(cfg, bad, false); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("recover as %+v for agent n1: %v, want %v", bad, err, ErrInvalidArgument)
		}
	}
}
