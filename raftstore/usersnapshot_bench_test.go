package raftstore

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/snapshot"
)

// benchSnapshotInstances is the registry size of the snapshot benchmarks.
const benchSnapshotInstances = 100_000

// snapshotFileOf builds, without Raft, a snapshot file of a registry of n
// instances of 100 services (about 200 bytes each).
func snapshotFileOf(b *testing.B, n int) []byte {
	b.Helper()
	f := NewFSM(16)
	for i := range n {
		data, err := proto.Marshal(registerCmd(benchInstance(fmt.Sprintf("svc%03d.rpc", i%100), int64(i))))
		if err != nil {
			b.Fatal(err)
		}
		if err, ok := f.Apply(&raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data}).(error); ok {
			b.Fatal(err)
		}
	}
	snap, err := f.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	var state bytes.Buffer
	if err := snap.(*fsmSnapshot).write(&state); err != nil {
		b.Fatal(err)
	}
	var file bytes.Buffer
	w, err := snapshot.NewWriter(&file, snapshot.Header{Index: uint64(n), Term: 1, Revision: uint64(n), Size: uint64(state.Len())})
	if err != nil {
		b.Fatal(err)
	}
	w.Write(state.Bytes())
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	return file.Bytes()
}

// BenchmarkSnapshot100k measures, on one fsynced agent holding 100,000
// instances, what `zrpcctl snapshot save` and `restore` cost the agent:
//   - save: a new Raft snapshot of the replica, written as a snapshot
//     file to disk and synced (one registration before each, untimed, so
//     that raft has something new to snapshot);
//   - verify: the checks of a file before a restore (SHA-256, and a load
//     into a scratch state machine), which save's verification also costs;
//   - restore: the checks plus raft's user restore of the file.
//
// The goal is under 5 s each.
func BenchmarkSnapshot100k(b *testing.B) {
	file := snapshotFileOf(b, benchSnapshotInstances)
	s := openBenchStore(b)
	if _, err := s.RestoreSnapshot(context.Background(), bytes.NewReader(file)); err != nil {
		b.Fatal(err)
	}
	if n := s.FSM().InstanceCount(); n != benchSnapshotInstances {
		b.Fatalf("the store holds %d instances, want %d", n, benchSnapshotInstances)
	}
	dir := b.TempDir()

	b.Run("save", func(b *testing.B) {
		b.SetBytes(int64(len(file)))
		i := 0
		for b.Loop() {
			b.StopTimer()
			i++
			mustStoreApply(b, s, registerCmd(benchInstance("extra.rpc", int64(i))))
			b.StartTimer()
			f, err := os.Create(filepath.Join(dir, "save.snap"))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.WriteSnapshot(context.Background(), f); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
	b.Run("verify", func(b *testing.B) {
		b.SetBytes(int64(len(file)))
		for b.Loop() {
			if _, err := CheckSnapshotFile(bytes.NewReader(file)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("restore", func(b *testing.B) {
		b.SetBytes(int64(len(file)))
		for b.Loop() {
			if _, err := s.RestoreSnapshot(context.Background(), bytes.NewReader(file)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
