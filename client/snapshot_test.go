package client

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/grpctest"
)

// snapshotAgent is a fake agent's Snapshot API: Restore reads the whole
// file, then refuses it with refusal, or keeps it.
type snapshotAgent struct {
	zrpcpb.UnimplementedSnapshotServer
	refusal error
	calls   atomic.Int32

	mu   sync.Mutex
	kept []byte
}

func (a *snapshotAgent) Restore(stream zrpcpb.Snapshot_RestoreServer) error {
	a.calls.Add(1)
	var got []byte
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		got = append(got, chunk.GetData()...)
	}
	if a.refusal != nil {
		return a.refusal
	}
	a.mu.Lock()
	a.kept = got
	a.mu.Unlock()
	return stream.SendAndClose(&zrpcpb.SnapshotRestoreResponse{})
}

func (a *snapshotAgent) start(t *testing.T) string {
	return grpctest.Serve(t, func(s *grpc.Server) { zrpcpb.RegisterSnapshotServer(s, a) })
}

// TestRestoreSaysWhenItWasNotApplied: a restore an agent refused as not
// applied (it had no leader to restore through) goes on to the next agent
// from the file's start when the file can seek back; from a pipe it fails,
// and the error says the restore was not applied.
func TestRestoreSaysWhenItWasNotApplied(t *testing.T) {
	refusal := apierr.ToStatus(apierr.NotApplied(fmt.Errorf("%w: this agent is cut off from the leader", apierr.ErrNoLeader)))
	file := bytes.Repeat([]byte("snapshot"), 100<<10) // several chunks

	cut, ok := &snapshotAgent{refusal: refusal}, &snapshotAgent{}
	c := newTestClient(t, cut.start(t), ok.start(t))
	if _, err := c.RestoreSnapshot(t.Context(), bytes.NewReader(file), SnapshotOptions{}); err != nil {
		t.Fatalf("RestoreSnapshot from a file, the first agent refusing it as not applied: %v", err)
	}
	ok.mu.Lock()
	kept := ok.kept
	ok.mu.Unlock()
	if !bytes.Equal(kept, file) {
		t.Fatalf("the second agent got %d bytes, want the file's %d from its start", len(kept), len(file))
	}

	cut, ok = &snapshotAgent{refusal: refusal}, &snapshotAgent{}
	c = newTestClient(t, cut.start(t), ok.start(t))
	_, err := c.RestoreSnapshot(t.Context(), io.MultiReader(bytes.NewReader(file)), SnapshotOptions{})
	if err == nil || !apierr.IsNotApplied(err) || strings.Count(err.Error(), "the write was not applied") != 1 {
		t.Fatalf("RestoreSnapshot from a pipe, refused as not applied: %v, want the error to say (once) it was not applied", err)
	}
	if ok.calls.Load() != 0 {
		t.Fatal("a restore from a pipe went on to the second agent after the first had read from it")
	}
}

// TestRestoreWhoseAnswerIsLostSaysTheOutcomeIsUnknown: an agent that took
// the whole file and then went away may have restored it: the error says
// the outcome is unknown, not that the transfer failed part way.
func TestRestoreWhoseAnswerIsLostSaysTheOutcomeIsUnknown(t *testing.T) {
	file := bytes.Repeat([]byte("snapshot"), 100<<10)
	gone := &snapshotAgent{refusal: apierr.ToStatus(fmt.Errorf("%w: stopping", apierr.ErrShuttingDown))}
	c := newTestClient(t, gone.start(t))
	_, err := c.RestoreSnapshot(t.Context(), bytes.NewReader(file), SnapshotOptions{})
	if !errors.Is(err, apierr.ErrOutcomeUnknown) || !strings.Contains(err.Error(), "may have been applied") {
		t.Fatalf("RestoreSnapshot whose agent went away after the whole file: %v, want the outcome unknown", err)
	}
}
