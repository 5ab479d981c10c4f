package grpcapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/fsmtest"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/raftstore"
)

// snapshotSink keeps a snapshot of an FSM in memory.
type snapshotSink struct{ bytes.Buffer }

func (s *snapshotSink) ID() string    { return "test" }
func (s *snapshotSink) Cancel() error { return nil }
func (s *snapshotSink) Close() error  { return nil }

// restoreFrom replaces dst's state with src's, as a snapshot install does.
func restoreFrom(t *testing.T, dst, src *raftstore.FSM) {
	t.Helper()
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink snapshotSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if err := dst.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatalf("restore: %v", err)
	}
}

// TestWatchSendingDuringARestoreIsNotTooSlow: a restore of the registry
// while a watch's send waits for its reader ends the watch Unavailable,
// saying so, so that the client resumes it; it is not a reader too slow,
// and the slow-watcher metric does not count it.
func TestWatchSendingDuringARestoreIsNotTooSlow(t *testing.T) {
	fsm := raftstore.NewFSM(1 << 12)
	w := fsmtest.NewWriter(t, fsm)
	metrics := &watchMetrics{}
	reg := NewRegistry(context.Background(), RegistryConfig{Agent: "a1", Replica: fsm, Metrics: metrics})
	done := make(chan watchResult, 1)
	s := startWatch(t, reg, &pb.WatchRequest{Service: "slow.rpc"}, 1, done)
	<-s.sent // the empty snapshot; the reader stops now
	w.Register(&pb.Instance{Service: "slow.rpc", Id: "first", Address: "127.0.0.1:9000"})
	testwait.For(t, 10*time.Second, "the send of the first event waiting for the reader", func() bool { return stackHas("(*stalledStream).Send(") })

	backup := raftstore.NewFSM(1 << 12)
	bw := fsmtest.NewWriter(t, backup)
	for i := range 10 {
		bw.Register(&pb.Instance{Service: "slow.rpc", Id: fmt.Sprint(i), Address: "127.0.0.1:9000"})
	}
	restoreFrom(t, fsm, backup)

	var r watchResult
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the watch was not ended by the restore")
	}
	st := status.Convert(r.err)
	if st.Code() != codes.Unavailable || errors.Is(apierr.FromStatus(r.err), apierr.ErrWatchTooSlow) || !strings.Contains(st.Message(), "restore") {
		t.Fatalf("the watch ended with %v, want Unavailable naming the restore", r.err)
	}
	if n := metrics.slow(); n != 0 {
		t.Fatalf("the slow-watcher metric counted %d watches, want 0", n)
	}
}
