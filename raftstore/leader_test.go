package raftstore

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// heldFuture is a barrier that resolves only once release is closed.
type heldFuture struct {
	release <-chan struct{}
	then    func() raft.Future
}

func (f heldFuture) Error() error {
	<-f.release
	return f.then().Error()
}

// TestStoreConsistentReadWaitsForBarrierAfterReelection: a node that loses
// leadership and wins it back must refuse consistent reads until its new
// barrier has applied, also while its old leader functions are still
// returning.
func TestStoreConsistentReadWaitsForBarrierAfterReelection(t *testing.T) {
	s := New(testStoreConfig(t, t.TempDir(), slog.LevelWarn))
	var (
		hold           atomic.Bool
		barrierHeld    = make(chan struct{}, 1)
		releaseBarrier = make(chan struct{})
		cancelled      = make(chan struct{}, 2)
		releaseLeader  = make(chan struct{})
	)
	s.barrier = func(timeout time.Duration) raft.Future {
		if !hold.Load() {
			return s.raft.Barrier(timeout)
		}
		select {
		case barrierHeld <- struct{}{}:
		default:
		}
		return heldFuture{release: releaseBarrier, then: func() raft.Future { return s.raft.Barrier(timeout) }}
	}
	s.OnLeader(func(ctx context.Context) {
		<-ctx.Done()
		select {
		case cancelled <- struct{}{}:
		default:
		}
		<-releaseLeader // a leader function slow to return
	})
	openStore(t, s)
	letLeaderReturn := sync.OnceFunc(func() { close(releaseLeader) })
	letBarrierApply := sync.OnceFunc(func() { close(releaseBarrier) })
	t.Cleanup(letLeaderReturn) // cleanups run before the store closes
	t.Cleanup(letBarrierApply)
	eventually(t, 10*time.Second, "consistent reads on the first leader", func() bool {
		return s.CheckRead(pb.Consistency_CONSISTENT) == nil
	})

	// Leadership is lost and won back at once; raft itself stays leader.
	hold.Store(true)
	s.notify <- false
	s.notify <- true
	<-cancelled
	if err := s.CheckRead(pb.Consistency_CONSISTENT); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("consistent read while the old leader functions return: %v, want ErrNoLeader", err)
	}
	letLeaderReturn()
	<-barrierHeld
	if err := s.CheckRead(pb.Consistency_CONSISTENT); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("consistent read before the new barrier applied: %v, want ErrNoLeader", err)
	}
	letBarrierApply()
	eventually(t, 10*time.Second, "consistent reads after the new barrier", func() bool {
		return s.CheckRead(pb.Consistency_CONSISTENT) == nil
	})
}
