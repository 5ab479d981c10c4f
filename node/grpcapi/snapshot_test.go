package grpcapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
	"github.com/zrpcio/zrpc/snapshot"
)

// snapshotAgentFake counts what the Snapshot service asks of its agent.
type snapshotAgentFake struct {
	checks, restores atomic.Int32
}

func (f *snapshotAgentFake) WriteSnapshot(context.Context, io.Writer) (snapshot.Header, error) {
	return snapshot.Header{}, errors.New("not saved here")
}

func (f *snapshotAgentFake) RestoreSnapshot(_ context.Context, r io.ReadSeeker) (uint64, error) {
	f.restores.Add(1)
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	_, _, err := snapshot.Verify(r) // the store checks what it restores
	return 7, err
}

func (f *snapshotAgentFake) CheckSnapshotFile(r io.ReadSeeker) (snapshot.Header, error) {
	f.checks.Add(1)
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return snapshot.Header{}, err
	}
	h, _, err := snapshot.Verify(r)
	return h, err
}

// leaderFake is a Cluster whose agent leads.
type leaderFake struct{}

func (leaderFake) Propose(context.Context, *pb.Command) (uint64, error) { return 0, nil }
func (leaderFake) OnLeader(_ context.Context, local func() error, _ func(context.Context, grpc.ClientConnInterface) error) error {
	return local()
}
func (leaderFake) Write(_ context.Context, local func() error, _ func(context.Context, grpc.ClientConnInterface) error) error {
	return local()
}
func (leaderFake) CheckRead(context.Context, pb.Consistency) error { return nil }

func serveSnapshots(t *testing.T, agent SnapshotAgent, dir string, free ...uint64) pb.SnapshotClient {
	t.Helper()
	cfg := SnapshotConfig{Agent: "a1", Snapshots: agent, Cluster: leaderFake{}, TempDir: dir, RestorePattern: "restore-*.tmp"}
	if len(free) > 0 {
		cfg.FreeBytes = func() (uint64, error) { return free[0], nil }
	}
	snaps := NewSnapshots(cfg)
	reg := NewRegistry(context.Background(), RegistryConfig{Agent: "a1", Replica: raftstore.NewFSM(16), Metrics: &watchMetrics{}})
	addr := serveTest(t, Services{Registry: reg, Snapshot: snaps})
	cc := dialTest(t, addr)
	return pb.NewSnapshotClient(cc)
}

// A Restore stream is refused as soon as its header shows it is not a
// snapshot this agent reads, or once it runs longer than its header
// announces: without the client having to finish sending, without the
// agent checking or restoring anything, and leaving no file behind.
func TestSnapshotRestoreIsRefusedByItsHeaderWhileItStreams(t *testing.T) {
	state := []byte("state")
	var file bytes.Buffer
	w, _ := snapshot.NewWriter(&file, snapshot.Header{Index: 3, Term: 1, Revision: 3, Size: uint64(len(state))})
	w.Write(state)
	w.Close()
	future := bytes.Clone(file.Bytes())
	future[9]++
	for _, c := range []struct {
		name  string
		chunk []byte
		text  string
		free  uint64 // bytes the agent's disk has free
	}{
		{"not a snapshot", bytes.Repeat([]byte("x"), 100), "not a zrpc snapshot", 1 << 30},
		{"future format", future, "unsupported snapshot format", 1 << 30},
		{"longer than announced", append(bytes.Clone(file.Bytes()), make([]byte, 64)...), "longer than", 1 << 30},
		{"larger than the disk has room for", file.Bytes(), "has 100 free", 100}, // the file needs 2 × 87 bytes
	} {
		t.Run(c.name, func(t *testing.T) {
			agent, dir := &snapshotAgentFake{}, t.TempDir()
			client := serveSnapshots(t, agent, dir, c.free)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream, err := client.Restore(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(&pb.SnapshotChunk{Data: c.chunk}); err != nil {
				t.Fatal(err)
			}
			// No CloseSend: the agent must answer on what it has.
			var resp pb.SnapshotRestoreResponse
			err = stream.RecvMsg(&resp)
			if code := status.Code(err); (code != codes.InvalidArgument && code != codes.ResourceExhausted) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("Restore = %v, want InvalidArgument or ResourceExhausted mentioning %q before the stream ends", err, c.text)
			}
			if n, m := agent.checks.Load(), agent.restores.Load(); n+m != 0 {
				t.Fatalf("the agent checked %d and restored %d files", n, m)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatalf("the refused restore left %v", entries)
			}
		})
	}
}

// A whole, intact file is restored on the leader, which checks it once
// (in RestoreSnapshot, not again before it), and the answer carries the
// file's header and the revision after the restore.
func TestSnapshotRestoreChecksThenRestores(t *testing.T) {
	state := []byte("state")
	var file bytes.Buffer
	w, _ := snapshot.NewWriter(&file, snapshot.Header{Index: 3, Term: 1, Revision: 3, Size: uint64(len(state))})
	w.Write(state)
	w.Close()
	agent, dir := &snapshotAgentFake{}, t.TempDir()
	client := serveSnapshots(t, agent, dir)
	stream, err := client.Restore(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	data := file.Bytes()
	for len(data) > 0 { // in chunks smaller than the header
		n := min(len(data), 7)
		if err := stream.Send(&pb.SnapshotChunk{Data: data[:n]}); err != nil {
			t.Fatal(err)
		}
		data = data[n:]
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetHeader().GetRevision() != 7 || resp.FileIndex != 3 || resp.FileTerm != 1 {
		t.Fatalf("answer %v, want revision 7 for the file at index 3, term 1", resp)
	}
	if agent.checks.Load() != 0 || agent.restores.Load() != 1 {
		t.Fatalf("the agent checked %d files besides restoring %d, want 0 and 1", agent.checks.Load(), agent.restores.Load())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the restore left %v", entries)
	}
}
