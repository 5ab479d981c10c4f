package raftstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/internal/testwait"
)

// TestForwardedWritesMoveToTheNewLeaderWhenTheOldOneGoesSilent: writes
// forwarded to a leader that takes them and never answers (a stopped
// process, a partition that drops packets) are asked again of the next
// leader as soon as the follower sees leadership move, not when
// LeaderWait (20 s here, beyond the writes' own 15 s) runs out: every one
// of them, the ones in calls of their own and the ones that waited for a
// batch, is applied once, and the calls to the old leader end.
func TestForwardedWritesMoveToTheNewLeaderWhenTheOldOneGoesSilent(t *testing.T) {
	stores, leader, api, f := silentLeaderCluster(t, 20*time.Second)

	const writes = maxForwardCalls + 4
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, writes)
	for i := range writes {
		wg.Go(func() {
			_, errs[i] = f.Apply(ctx, registerCmd(testInstance("moved", fmt.Sprint(i), "n1")))
		})
	}
	testwait.For(t, 10*time.Second, "the writes to reach the silent leader", func() bool {
		return api.calls.Load() == maxForwardCalls
	})
	next := transferLeadership(t, stores, leader)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("write %d forwarded to a silent leader that lost leadership: %v", i, err)
		}
	}
	if insts, _ := next.FSM().Instances("moved"); len(insts) != writes {
		t.Errorf("the new leader %s has %d instances, want the %d written", next.cfg.NodeID, len(insts), writes)
	}
	// The calls to the silent leader, batches too, ended with the move
	// rather than at their deadlines.
	testwait.For(t, 5*time.Second, "no call left in flight to the old leader", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, b := range f.batchers {
			b.mu.Lock()
			n := b.inFlight
			b.mu.Unlock()
			if n != 0 {
				return false
			}
		}
		return true
	})
}

// TestForwardedWriteASilentLeaderCommittedIsAppliedOnce: a leader that
// committed a forwarded write and stopped before answering: the write is
// asked again of the next leader under its request id, and answered with
// the revision the first commit gave it, applied once.
func TestForwardedWriteASilentLeaderCommittedIsAppliedOnce(t *testing.T) {
	stores, apis := forwardingCluster(t)
	leader := leaderOf(t, stores)
	follower := stores[(indexOf(stores, leader)+1)%len(stores)]
	api := apis[indexOf(stores, leader)]
	api.holdAnswers = make(chan struct{})
	t.Cleanup(func() { close(api.holdAnswers) })
	f := NewForwarder(follower, ForwardConfig{LeaderWait: 20 * time.Second, Dial: newTestDialer(t).dial})

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := registerCmd(testInstance("once", "i1", "n1"))
	cmd.RequestId = "write-once"
	type result struct {
		rev uint64
		err error
	}
	done := make(chan result, 1)
	go func() {
		rev, err := f.Apply(ctx, cmd)
		done <- result{rev, err}
	}()
	var committed uint64
	testwait.For(t, 10*time.Second, "the leader to apply the write", func() bool {
		if inst := leader.FSM().Instance("once", "i1"); inst != nil {
			committed = inst.CreateRevision
			return true
		}
		return false
	})
	next := transferLeadership(t, stores, leader)
	r := <-done
	if r.err != nil || r.rev != committed {
		t.Fatalf("a write the silent leader committed: revision %d, %v; want the revision it was committed at, %d", r.rev, r.err, committed)
	}
	insts, rev := next.FSM().Instances("once")
	if len(insts) != 1 || insts[0].ModRevision != committed {
		t.Fatalf("the new leader %s (at revision %d) holds %v; want the one instance, as committed at %d", next.cfg.NodeID, rev, insts, committed)
	}
}

// TestForwardedCallCutByALeaderChangeIsAskedAgainUnlessItSaysOtherwise:
// a call forwarded to the leader that the leader's move cancels is asked
// again of the new leader; one that answers something else when cut (a
// relay that had sent part of its answer says Aborted) is not.
func TestForwardedCallCutByALeaderChangeIsAskedAgainUnlessItSaysOtherwise(t *testing.T) {
	stores, _ := forwardingCluster(t)
	for _, c := range []struct {
		name      string
		cut       func(ctx context.Context) error
		wantCalls int
		wantCode  codes.Code
	}{
		{"cancelled", func(ctx context.Context) error { return status.FromContextError(ctx.Err()).Err() }, 2, codes.OK},
		{"aborted", func(context.Context) error { return status.Error(codes.Aborted, "sent part of the answer; ask again") }, 1, codes.Aborted},
	} {
		t.Run(c.name, func(t *testing.T) {
			leader := leaderOf(t, stores)
			follower := stores[(indexOf(stores, leader)+1)%len(stores)]
			f := NewForwarder(follower, ForwardConfig{LeaderWait: 20 * time.Second, Dial: newTestDialer(t).dial})
			calls := 0 // attempts, here or on the leader (the follower may lead next)
			err := f.OnLeader(t.Context(), func() error { calls++; return nil }, func(ctx context.Context, _ grpc.ClientConnInterface) error {
				calls++
				if calls > 1 {
					return nil
				}
				transferLeadership(t, stores, leader)
				select {
				case <-ctx.Done():
				case <-time.After(10 * time.Second):
					t.Error("the call's context did not end when the leader moved")
				}
				return c.cut(ctx)
			})
			if status.Code(err) != c.wantCode || calls != c.wantCalls {
				t.Fatalf("OnLeader = %v after %d calls; want code %v after %d", err, calls, c.wantCode, c.wantCalls)
			}
		})
	}
}
