package raftstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// TestForwardedWriteToASilentLeaderFailsSayingSoBeforeTheCallersDeadline:
// writes forwarded to a leader that takes them and never answers, by a
// caller whose deadline comes before leader_wait, fail with ErrNoLeader
// saying the leader did not answer, before the caller's deadline: the
// writes in calls of their own and the ones waiting for a batch alike.
// The caller's own DeadlineExceeded would tell it nothing of why.
func TestForwardedWriteToASilentLeaderFailsSayingSoBeforeTheCallersDeadline(t *testing.T) {
	_, _, api, f := silentLeaderCluster(t, time.Minute)

	const writes = maxForwardCalls + 2 // two wait for a batch
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, writes)
	for i := range writes {
		wg.Go(func() {
			_, errs[i] = f.Apply(ctx, registerCmd(testInstance("silent", fmt.Sprint(i), "n1")))
		})
	}
	testwait.For(t, 10*time.Second, "the writes to reach the silent leader", func() bool {
		return api.calls.Load() == maxForwardCalls
	})
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, ErrNoLeader) || !strings.Contains(err.Error(), "did not answer") {
			t.Errorf("write %d to a silent leader, with the caller's deadline before leader_wait: %v; want ErrNoLeader saying the leader did not answer", i, err)
		}
	}
}

// TestForwardedWriteThatCarriesABatchIsAnsweredByItsOwnDeadline: a
// write whose caller sends the batch it waited in, with another write
// that may wait longer, is answered by its own deadline (ErrNoLeader, the
// silent leader did not answer), not held until the batch's call ends
// for the other write.
func TestForwardedWriteThatCarriesABatchIsAnsweredByItsOwnDeadline(t *testing.T) {
	_, _, api, f := silentLeaderCluster(t, time.Minute)
	waiting := func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, b := range f.batchers {
			b.mu.Lock()
			defer b.mu.Unlock()
			return len(b.waiting)
		}
		return 0
	}

	long, cancelLong := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(cancelLong)
	apply := func(ctx context.Context, id string) chan error {
		done := make(chan error, 1)
		wg.Go(func() {
			_, err := f.Apply(ctx, registerCmd(testInstance("batch", id, "n1")))
			done <- err
		})
		return done
	}
	// Every call the follower may have in flight waits on the silent
	// leader; the first to end hands its place to the writes waiting.
	first, endFirst := context.WithCancel(long)
	apply(first, "first")
	testwait.For(t, 10*time.Second, "the first write to reach the silent leader", func() bool { return api.calls.Load() == 1 })
	for i := range maxForwardCalls - 1 {
		apply(long, fmt.Sprint(i))
	}
	testwait.For(t, 10*time.Second, "the writes to reach the silent leader", func() bool {
		return api.calls.Load() == maxForwardCalls
	})
	short, cancel := context.WithTimeout(long, 2*time.Second)
	defer cancel()
	shortDone := apply(short, "short")
	testwait.For(t, 10*time.Second, "the short write to wait", func() bool { return waiting() == 1 })
	apply(long, "long")
	testwait.For(t, 10*time.Second, "the long write to wait", func() bool { return waiting() == 2 })
	endFirst() // the short write sends the batch of both

	select {
	case err := <-shortDone:
		if !errors.Is(err, ErrNoLeader) || !strings.Contains(err.Error(), "did not answer") {
			t.Fatalf("the write that sent a batch to a silent leader: %v; want ErrNoLeader saying the leader did not answer", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the write that sent a batch was not answered by its deadline: it waits for the batch's call, which may run to the other write's")
	}
}

// TestForwarderNamesTheLeaderWhoseAPIDoesNotAnswer: a follower whose
// writes reach the Raft leader's gRPC API no more (its port closed, the
// network to it cut) while Raft works fails them saying which leader, at
// which address, did not answer, not that no leader answered: the
// operator sees a leader in `zrpcctl raft peers` and would look for the
// wrong fault.
func TestForwarderNamesTheLeaderWhoseAPIDoesNotAnswer(t *testing.T) {
	stores := openCluster(t, 3)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	for _, s := range stores {
		upsertOnLeader(t, stores, &pb.Command{Kind: &pb.Command_NodeUpsert{NodeUpsert: &pb.Node{Name: s.cfg.NodeID, GrpcAddress: closed}}})
	}
	leader := leaderOf(t, stores)
	follower := stores[(indexOf(stores, leader)+1)%len(stores)]
	testwait.For(t, 10*time.Second, "the follower to apply the node records", func() bool {
		return follower.FSM().Node(leader.cfg.NodeID).GetGrpcAddress() == closed
	})
	f := NewForwarder(follower, ForwardConfig{LeaderWait: 500 * time.Millisecond, Dial: newTestDialer(t).dial})
	_, err = f.Apply(t.Context(), registerCmd(testInstance("api", "0", "n1")))
	if !errors.Is(err, ErrNoLeader) {
		t.Fatalf("Apply through a leader whose API does not answer = %v, want ErrNoLeader", err)
	}
	if _, id := follower.Leader(); id != leader.cfg.NodeID {
		t.Skipf("leadership moved during the test (to %q): the error may name either", id)
	}
	wantFailures(t, "a write whose leader's API does not answer", f, map[ForwardFailure]uint64{ForwardUnreachable: 1})
	for _, want := range []string{fmt.Sprintf("leader %s at %s", leader.cfg.NodeID, closed), "gRPC API up and reachable"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("Apply through a leader whose API does not answer = %v; want it to say %q", err, want)
		}
	}
	t.Log(err)
}

// TestForwardedCallToALeaderThatDoesNotAnswerEndsBeforeTheCallersDeadline:
// a call forwarded to the leader (a TTL renewal, a consistent read) that
// the leader takes and never answers, while it keeps leading, ends before
// the caller's deadline with ErrNoLeader naming that leader, not with
// the caller's own DeadlineExceeded, which says nothing of why.
func TestForwardedCallToALeaderThatDoesNotAnswerEndsBeforeTheCallersDeadline(t *testing.T) {
	stores, _ := forwardingCluster(t)
	leader := leaderOf(t, stores)
	follower := stores[(indexOf(stores, leader)+1)%len(stores)]
	f := NewForwarder(follower, ForwardConfig{LeaderWait: time.Minute, Dial: newTestDialer(t).dial})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	err := f.Write(ctx, func() error { return nil }, func(ctx context.Context, _ grpc.ClientConnInterface) error {
		<-ctx.Done() // the leader takes the call and never answers
		return status.FromContextError(ctx.Err()).Err()
	})
	if _, id := follower.Leader(); id != leader.cfg.NodeID {
		t.Skipf("leadership moved during the test (to %q)", id)
	}
	if !errors.Is(err, ErrNoLeader) || !strings.Contains(err.Error(), "leader "+leader.cfg.NodeID+" at ") {
		t.Fatalf("a call forwarded to a leader that does not answer = %v; want ErrNoLeader naming leader %s", err, leader.cfg.NodeID)
	}
}
