package raftstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// internalAPI serves a store's Internal.Apply as an agent does: only the
// leader applies.
type internalAPI struct {
	pb.UnimplementedInternalServer
	s     *Store
	calls atomic.Int32
	// gate, when set, holds every call until it is closed.
	gate chan struct{}
	// noBatch answers ApplyBatch Unimplemented, as an older agent.
	noBatch bool
	// readIndexCalls counts ReadIndex calls.
	readIndexCalls atomic.Int32
	// holdAnswers, when set, holds every applied write's answer until it
	// is closed: a leader that committed the write and stopped.
	holdAnswers chan struct{}
}

func (a *internalAPI) Apply(ctx context.Context, cmd *pb.Command) (*pb.ApplyResponse, error) {
	a.calls.Add(1)
	if a.gate != nil {
		<-a.gate
	}
	if !a.s.IsLeader() {
		return nil, apierr.ToStatus(ErrNotLeader)
	}
	rev, err := a.s.Apply(ctx, cmd)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	if a.holdAnswers != nil {
		<-a.holdAnswers
	}
	return &pb.ApplyResponse{Revision: rev}, nil
}

func (a *internalAPI) ReadIndex(ctx context.Context, _ *pb.ReadIndexRequest) (*pb.ReadIndexResponse, error) {
	a.readIndexCalls.Add(1)
	if !a.s.IsLeader() {
		return nil, apierr.ToStatus(ErrNotLeader)
	}
	index, err := a.s.ReadIndex(ctx)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	return &pb.ReadIndexResponse{Index: index}, nil
}

func (a *internalAPI) ApplyBatch(ctx context.Context, req *pb.ApplyBatchRequest) (*pb.ApplyBatchResponse, error) {
	a.calls.Add(1)
	if a.noBatch {
		return a.UnimplementedInternalServer.ApplyBatch(ctx, req)
	}
	if a.gate != nil {
		<-a.gate
	}
	if !a.s.IsLeader() {
		return nil, apierr.ToStatus(ErrNotLeader)
	}
	resp := &pb.ApplyBatchResponse{}
	for _, cmd := range req.Commands {
		rev, err := a.s.Apply(ctx, cmd)
		resp.Results = append(resp.Results, NewApplyResult(rev, err))
	}
	return resp, nil
}

// serveInternal serves s's Internal API on a loopback port.
func serveInternal(t *testing.T, s *Store) (*internalAPI, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := &internalAPI{s: s}
	srv := grpc.NewServer()
	pb.RegisterInternalServer(srv, api)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return api, ln.Addr().String()
}

// testDialer dials peers on loopback, one shared connection per address.
type testDialer struct {
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newTestDialer(t *testing.T) *testDialer {
	d := &testDialer{conns: map[string]*grpc.ClientConn{}}
	t.Cleanup(func() {
		for _, c := range d.conns {
			c.Close()
		}
	})
	return d
}

func (d *testDialer) dial(_ context.Context, addr string) (grpc.ClientConnInterface, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	d.conns[addr] = c
	return c, nil
}

// forwardingCluster is a 3-store cluster whose stores serve Internal.Apply
// and whose node table names their gRPC addresses.
func forwardingCluster(t *testing.T, configure ...func(i int, cfg *Config)) (stores []*Store, apis []*internalAPI) {
	stores = openCluster(t, 3, configure...)
	apis = make([]*internalAPI, len(stores))
	for i, s := range stores {
		var addr string
		apis[i], addr = serveInternal(t, s)
		upsertOnLeader(t, stores, &pb.Command{Kind: &pb.Command_NodeUpsert{NodeUpsert: &pb.Node{Name: s.cfg.NodeID, GrpcAddress: addr}}})
	}
	return stores, apis
}

// upsertOnLeader applies an idempotent cmd on whichever store leads,
// again when leadership moved under it (a loaded machine misses
// heartbeats): the tests built on the cluster are about forwarding, not
// about the setup's writes.
func upsertOnLeader(t *testing.T, stores []*Store, cmd *pb.Command) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := leaderOf(t, stores).Apply(context.Background(), cmd)
		if err == nil {
			return
		}
		if !(errors.Is(err, ErrNoLeader) || errors.Is(err, ErrNotLeader)) || time.Now().After(deadline) {
			t.Fatalf("Apply(%v): %v", cmd, err)
		}
	}
}

func TestForwarderAppliesOnTheLeaderFromEveryStore(t *testing.T) {
	stores, apis := forwardingCluster(t)
	dialer := newTestDialer(t)
	leader := leaderOf(t, stores)
	for i, s := range stores {
		var local atomic.Int32
		f := NewForwarder(s, ForwardConfig{LeaderWait: 5 * time.Second, Dial: dialer.dial,
			LocalApply: func(ctx context.Context, cmd *pb.Command) (uint64, error) {
				local.Add(1)
				return s.Apply(ctx, cmd)
			}})
		before := apis[i].calls.Load()
		leaderCalls := apis[indexOf(stores, leader)].calls.Load()
		rev, err := f.Apply(t.Context(), registerCmd(testInstance("api", s.cfg.NodeID, "n1")))
		if err != nil {
			t.Fatalf("Apply from %s: %v", s.cfg.NodeID, err)
		}
		if got := s.FSM().Revision(); got < rev {
			t.Errorf("Apply from %s answered revision %d before its replica applied it (at %d)", s.cfg.NodeID, rev, got)
		}
		if s == leader {
			if local.Load() != 1 || apis[i].calls.Load() != before {
				t.Errorf("the leader applied through LocalApply %d times and its own API %d times, want 1 and 0", local.Load(), apis[i].calls.Load()-before)
			}
			continue
		}
		if local.Load() != 0 || apis[indexOf(stores, leader)].calls.Load() != leaderCalls+1 {
			t.Errorf("follower %s: LocalApply %d times, leader's Internal.Apply %d times; want 0 and 1",
				s.cfg.NodeID, local.Load(), apis[indexOf(stores, leader)].calls.Load()-leaderCalls)
		}
	}
	if insts, _ := leader.FSM().Instances("api"); len(insts) != 3 {
		t.Errorf("leader has %d instances, want one written through each store", len(insts))
	}
}

// TestForwardedWriteIsAnsweredOnceTheFollowerAppliedIt: a write through a
// follower is answered once the follower's own replica has applied it,
// with raft's commit timeout at 10 s: the follower learns the commit from
// the leader's push, not from the timeout (the forwarder gives up waiting
// after a second and would answer before its replica had the write).
func TestForwardedWriteIsAnsweredOnceTheFollowerAppliedIt(t *testing.T) {
	stores, _ := forwardingCluster(t, longCommitTimeout)
	dialer := newTestDialer(t)
	leader := leaderOf(t, stores)
	for _, s := range stores {
		if s == leader {
			continue
		}
		f := NewForwarder(s, ForwardConfig{LeaderWait: 5 * time.Second, Dial: dialer.dial})
		for i := range 3 {
			rev, err := f.Apply(t.Context(), registerCmd(testInstance("api", fmt.Sprint(s.cfg.NodeID, i), "n1")))
			if err != nil {
				t.Fatalf("Apply from %s: %v", s.cfg.NodeID, err)
			}
			if got := s.FSM().Revision(); got < rev {
				t.Fatalf("Apply from %s answered revision %d before its replica applied it (at %d)", s.cfg.NodeID, rev, got)
			}
		}
	}
}

func indexOf(stores []*Store, s *Store) int {
	for i, x := range stores {
		if x == s {
			return i
		}
	}
	return -1
}

func TestForwarderRetriesWhileTheLeaderMoves(t *testing.T) {
	stores, _ := forwardingCluster(t)
	leader := leaderOf(t, stores)
	follower := stores[(indexOf(stores, leader)+1)%len(stores)]
	f := NewForwarder(follower, ForwardConfig{LeaderWait: 10 * time.Second, Dial: newTestDialer(t).dial})
	calls := 0
	err := f.OnLeader(t.Context(),
		func() error { t.Fatal("a follower ran the leader's local function"); return nil },
		func(_ context.Context, c grpc.ClientConnInterface) error {
			calls++
			if calls < 3 {
				return apierr.ToStatus(ErrNotLeader) // a leader that just stepped down
			}
			return nil
		})
	if err != nil || calls != 3 {
		t.Fatalf("OnLeader = %v after %d calls, want nil after 3", err, calls)
	}
	// An error that is the leader's answer is not retried, and keeps its
	// meaning across the wire.
	calls = 0
	err = f.OnLeader(t.Context(), func() error { return nil }, func(context.Context, grpc.ClientConnInterface) error {
		calls++
		return apierr.ToStatus(ErrNotFound)
	})
	if !errors.Is(err, ErrNotFound) || calls != 1 {
		t.Fatalf("OnLeader = %v after %d calls, want ErrNotFound after 1", err, calls)
	}
}

func TestForwarderWithoutALeader(t *testing.T) {
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelWarn)
	cfg.Bootstrap = false // never elects a leader
	s := New(cfg)
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	dialed := false
	dial := func(context.Context, string) (grpc.ClientConnInterface, error) {
		dialed = true
		return nil, errors.New("no peers")
	}
	remote := func(context.Context, grpc.ClientConnInterface) error {
		t.Fatal("remote ran without a leader")
		return nil
	}
	local := func() error { t.Fatal("local ran without leading"); return nil }

	f := NewForwarder(s, ForwardConfig{LeaderWait: 200 * time.Millisecond, Dial: dial})
	err := f.OnLeader(t.Context(), local, remote)
	if !errors.Is(err, ErrNoLeader) || !strings.Contains(err.Error(), "no leader answered within 200ms") {
		t.Fatalf("OnLeader without a leader = %v, want ErrNoLeader after leader_wait", err)
	}
	if dialed {
		t.Errorf("dialed although no leader is known")
	}

	// A caller whose deadline comes before leader_wait is answered
	// ErrNoLeader before its deadline, not its own DeadlineExceeded.
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	f = NewForwarder(s, ForwardConfig{LeaderWait: time.Minute, Dial: dial})
	if err := f.OnLeader(ctx, local, remote); !errors.Is(err, ErrNoLeader) || ctx.Err() != nil {
		t.Fatalf("OnLeader with the caller's deadline first = %v (caller's context: %v), want ErrNoLeader before the deadline", err, ctx.Err())
	}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	if err := f.OnLeader(cancelled, local, remote); !errors.Is(err, context.Canceled) {
		t.Fatalf("OnLeader of a cancelled caller = %v, want Canceled", err)
	}

	done := make(chan struct{})
	close(done)
	f = NewForwarder(s, ForwardConfig{LeaderWait: time.Minute, Dial: dial, Done: done})
	if err := f.OnLeader(t.Context(), local, remote); !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("OnLeader once the agent stops = %v, want ErrShuttingDown", err)
	}
}

// TestForwarderWriteIsMarkedNotAppliedOnlyWhenItWentNowhere: a write that
// found no leader for the whole wait, and so ran neither locally nor on a
// leader, fails with ErrNoLeader marked not applied, and the mark crosses
// the wire; a read (OnLeader) that found none is not marked, nor is a
// write that ran, whatever it failed with.
func TestForwarderWriteIsMarkedNotAppliedOnlyWhenItWentNowhere(t *testing.T) {
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelWarn)
	cfg.Bootstrap = false // never elects a leader
	leaderless := New(cfg)
	if err := leaderless.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { leaderless.Close() })
	leading := openCluster(t, 1)[0]
	dial := func(context.Context, string) (grpc.ClientConnInterface, error) { return nil, errors.New("no peers") }
	remote := func(context.Context, grpc.ClientConnInterface) error { return nil }
	for _, tc := range []struct {
		name       string
		store      *Store
		read       bool // OnLeader, not Write
		local      error
		want       error
		notApplied bool
	}{
		{name: "a write that found no leader", store: leaderless, want: ErrNoLeader, notApplied: true},
		{name: "a read that found no leader", store: leaderless, read: true, want: ErrNoLeader},
		{name: "a write the leader ran, failing with no leader", store: leading, local: fmt.Errorf("%w: lost the lead", ErrNoLeader), want: ErrNoLeader},
		{name: "a write the leader refused", store: leading, local: ErrNotFound, want: ErrNotFound},
	} {
		f := NewForwarder(tc.store, ForwardConfig{LeaderWait: 200 * time.Millisecond, Dial: dial})
		ran := false
		local := func() error { ran = true; return tc.local }
		call := f.Write
		if tc.read {
			call = f.OnLeader
		}
		err := call(t.Context(), local, remote)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if ran != (tc.local != nil) {
			t.Errorf("%s: local ran %v", tc.name, ran)
		}
		if got := apierr.IsNotApplied(err); got != tc.notApplied {
			t.Errorf("%s: %v: not applied %v, want %v", tc.name, err, got, tc.notApplied)
		}
		wire := apierr.FromStatus(apierr.ToStatus(err))
		if got := apierr.IsNotApplied(wire) && strings.Contains(wire.Error(), "the write was not applied"); got != tc.notApplied {
			t.Errorf("%s: across the wire %v: not applied %v, want %v", tc.name, wire, got, tc.notApplied)
		}
	}
}

func TestForwarderNeedsTheLeadersAddress(t *testing.T) {
	stores := openCluster(t, 3) // no node table: leader addresses unknown
	leader := leaderOf(t, stores)
	follower := stores[(indexOf(stores, leader)+1)%len(stores)]
	f := NewForwarder(follower, ForwardConfig{LeaderWait: 100 * time.Millisecond, Dial: newTestDialer(t).dial})
	_, err := f.Apply(t.Context(), registerCmd(testInstance("api", "0", "n1")))
	if !errors.Is(err, ErrNoLeader) || !strings.Contains(err.Error(), "gRPC address of leader "+leader.cfg.NodeID+" not known") {
		t.Fatalf("Apply with the leader's address unknown = %v, want ErrNoLeader naming it", err)
	}
}

// forwardersBatch holds forwarded writes while maxForwardCalls calls are
// in flight to the leader (its API's gate), then releases the gate once
// queued writes wait, and returns what each write answered and the size
// of every call the forwarder sent.
func forwardersBatch(t *testing.T, noBatch bool, cmds []*pb.Command) (errs []error, revs []uint64, calls []int) {
	t.Helper()
	stores, apis := forwardingCluster(t)
	leader := leaderOf(t, stores)
	follower := stores[(indexOf(stores, leader)+1)%len(stores)]
	api := apis[indexOf(stores, leader)]
	f := NewForwarder(follower, ForwardConfig{LeaderWait: 30 * time.Second, Dial: newTestDialer(t).dial})
	var mu sync.Mutex
	f.sent = func(n int) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, n)
	}
	api.gate, api.noBatch = make(chan struct{}), noBatch
	var wg sync.WaitGroup
	errs, revs = make([]error, len(cmds)), make([]uint64, len(cmds))
	apply := func(i int) {
		wg.Go(func() { revs[i], errs[i] = f.Apply(t.Context(), cmds[i]) })
	}
	for i := range maxForwardCalls {
		apply(i)
	}
	testwait.For(t, 30*time.Second, "the first writes to reach the leader", func() bool {
		return api.calls.Load() == maxForwardCalls
	})
	for i := maxForwardCalls; i < len(cmds); i++ {
		apply(i)
	}
	testwait.For(t, 30*time.Second, "the other writes to wait", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, b := range f.batchers {
			b.mu.Lock()
			n := len(b.waiting)
			b.mu.Unlock()
			return n == len(cmds)-maxForwardCalls
		}
		return false
	})
	close(api.gate)
	wg.Wait()
	return errs, revs, calls
}

// TestForwardedWritesThatWaitGoInOneCall: while a follower's calls to the
// leader are all in flight, the writes forwarded meanwhile wait and then
// go as one ApplyBatch call, and each is answered with its own outcome.
func TestForwardedWritesThatWaitGoInOneCall(t *testing.T) {
	var cmds []*pb.Command
	for i := range maxForwardCalls + 20 {
		cmds = append(cmds, registerCmd(testInstance("api", fmt.Sprint(i), "n1")))
	}
	missing := &pb.Command{Kind: &pb.Command_Deregister{Deregister: &pb.InstanceRef{Service: "api", Id: "missing"}}}
	cmds = append(cmds, missing)
	errs, revs, calls := forwardersBatch(t, false, cmds)
	seen := map[uint64]bool{}
	for i, err := range errs[:len(cmds)-1] {
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if seen[revs[i]] {
			t.Errorf("write %d answered revision %d, as another did", i, revs[i])
		}
		seen[revs[i]] = true
	}
	if err := errs[len(cmds)-1]; !errors.Is(err, ErrNotFound) {
		t.Errorf("deregister of a missing instance in the batch = %v, want ErrNotFound", err)
	}
	want := make([]int, maxForwardCalls)
	for i := range want {
		want[i] = 1
	}
	want = append(want, len(cmds)-maxForwardCalls)
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Errorf("calls sent with %v writes each, want %v (the waiting writes together)", calls, want)
	}
}

// TestForwardedWritesGoOneByOneToALeaderWithoutBatches: a leader that
// does not serve ApplyBatch (an older agent) gets every write that waited
// as its own Apply call, and each is applied.
func TestForwardedWritesGoOneByOneToALeaderWithoutBatches(t *testing.T) {
	var cmds []*pb.Command
	for i := range maxForwardCalls + 5 {
		cmds = append(cmds, registerCmd(testInstance("api", fmt.Sprint(i), "n1")))
	}
	errs, revs, _ := forwardersBatch(t, true, cmds)
	for i, err := range errs {
		if err != nil || revs[i] == 0 {
			t.Fatalf("write %d = revision %d, %v; want applied", i, revs[i], err)
		}
	}
}

// TestForwarderFailsSayingTheQuorumIsLost: with two of three voters gone
// and gossip saying so, a write fails soon with ErrNoLeader naming them,
// not after the whole leader_wait.
func TestForwarderFailsSayingTheQuorumIsLost(t *testing.T) {
	stores := openCluster(t, 3)
	survivor := stores[0]
	for _, s := range stores[1:] {
		s.Close()
	}
	eventually(t, 10*time.Second, "n1 steps down", func() bool { return !survivor.IsLeader() })
	reach := func(id string) Reach { return Reach{Status: "failed"} }
	f := NewForwarder(survivor, ForwardConfig{LeaderWait: time.Hour, Dial: newTestDialer(t).dial, Reach: reach})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err := f.Apply(ctx, registerCmd(testInstance("api", "0", "n1")))
	want := "1 of 3 voters reachable (n2 failed, n3 failed); a leader needs 2; restart the unreachable agents"
	if !errors.Is(err, ErrNoLeader) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Apply without a quorum = %v, want ErrNoLeader saying %q", err, want)
	}
	if !apierr.IsNotApplied(err) {
		t.Fatalf("Apply without a quorum, sent nowhere = %v, want it marked not applied", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("Apply without a quorum waited until the caller's deadline: %v", err)
	}
}

// TestForwarderWaitsOnVotersOnlyGossipMetaCountsOut: a voter alive by
// gossip whose meta says it has no Raft state yet (Reach.Lagging) may have
// received the log since, its meta lagging: a write does not give up
// after quorumLostWait on its account, and waits for a leader the whole
// LeaderWait. Voters failed by gossip still end the wait early.
func TestForwarderWaitsOnVotersOnlyGossipMetaCountsOut(t *testing.T) {
	stores := openCluster(t, 3)
	// A non-voter that would not learn for an hour that it is cut off,
	// so that only the count decides when the write stops waiting.
	n4 := joinNonVoter(t, stores, time.Hour, nil)
	for _, s := range stores {
		s.Close()
	}
	lagging := Reach{Status: "has no Raft state yet", Lagging: true}
	for _, c := range []struct {
		name  string
		reach map[string]Reach
		want  string
	}{
		{"two voters counted out on their meta", map[string]Reach{"n1": {Status: "failed"}, "n2": lagging, "n3": lagging},
			"no leader answered within 3s"},
		{"one voter counted out on its meta", map[string]Reach{"n1": {Status: "failed"}, "n2": {Status: "failed"}, "n3": lagging},
			"0 of 3 voters reachable (n1 failed, n2 failed, n3 has no Raft state yet); a leader needs 2; restart"},
	} {
		reach := func(id string) Reach { return c.reach[id] }
		f := NewForwarder(n4, ForwardConfig{LeaderWait: 3 * time.Second, Dial: newTestDialer(t).dial, Reach: reach})
		_, err := f.Apply(t.Context(), registerCmd(testInstance("api", "0", "n4")))
		if !errors.Is(err, ErrNoLeader) || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: Apply = %v, want ErrNoLeader saying %q", c.name, err, c.want)
		}
	}
}

// TestForwarderOfAStoreCutOffFromTheLeaderFailsSoon: a non-voter that
// was in contact with a leader and has heard from none for StaleReadBound
// (the voters gone, gossip not saying so yet) fails a write with
// ErrNoLeader saying it is cut off, instead of waiting the whole
// leader_wait: a client that can reach another agent goes there.
// (Voters learn it sooner: isolation, below.)
func TestForwarderOfAStoreCutOffFromTheLeaderFailsSoon(t *testing.T) {
	stores := openCluster(t, 3)
	survivor := joinNonVoter(t, stores, time.Second, nil)
	for _, s := range stores {
		s.Close()
	}
	f := NewForwarder(survivor, ForwardConfig{LeaderWait: time.Hour, Dial: newTestDialer(t).dial})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err := f.Apply(ctx, registerCmd(testInstance("api", "0", "n1")))
	want := "this agent is cut off from the leader: the leader last replicated its log to this agent"
	if !errors.Is(err, ErrNoLeader) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Apply on a store cut off from the leader = %v, want ErrNoLeader saying %q", err, want)
	}
	// It proposed and forwarded nothing: the write was not applied, and
	// the error says so (a client may send it again as it is).
	if !apierr.IsNotApplied(err) || !strings.Contains(apierr.ToStatus(err).Error(), "the write was not applied") {
		t.Fatalf("Apply on a store cut off from the leader = %v, want it marked not applied", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("Apply on a store cut off from the leader waited until the caller's deadline: %v", err)
	}
}

// TestForwarderOfVotersCutOffFromAQuorumFailSoon: two voters of five that
// hear each other but none of the other three (gone, as behind a
// partition) cannot make a quorum: each fails a write as cut off, long
// before StaleReadBound (an hour here) would say so.
func TestForwarderOfVotersCutOffFromAQuorumFailSoon(t *testing.T) {
	stores := openCluster(t, 5, func(i int, cfg *Config) { cfg.StaleReadBound = time.Hour })
	for _, s := range stores[:2] {
		eventually(t, 10*time.Second, s.cfg.NodeID+" in contact with a leader", func() bool { return !s.CutOff() })
	}
	for _, s := range stores[2:] {
		s.Close()
	}
	for _, s := range stores[:2] {
		eventually(t, 10*time.Second, s.cfg.NodeID+" not leading", func() bool { return !s.IsLeader() })
		f := NewForwarder(s, ForwardConfig{LeaderWait: time.Hour, Dial: newTestDialer(t).dial})
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		_, err := f.Apply(ctx, registerCmd(testInstance("api", "0", "n1")))
		cancel()
		want := "this agent is cut off from the leader: only 1 of the 4 other voters have sent this agent a Raft message or answered one within"
		if !errors.Is(err, ErrNoLeader) || !strings.Contains(err.Error(), want) || !apierr.IsNotApplied(err) {
			t.Fatalf("Apply on %s, with one other voter of four = %v, want ErrNoLeader saying %q, marked not applied", s.cfg.NodeID, err, want)
		}
	}
}

// TestForwarderOfAVoterNoPeerAnswersFailsBeforeStaleReadBound: a leader
// whose peers are all gone steps down and, hearing from no other voter
// (no message, no answer) for a few heartbeat timeouts, fails a write as
// cut off, long before StaleReadBound (an hour here) would say so.
func TestForwarderOfAVoterNoPeerAnswersFailsBeforeStaleReadBound(t *testing.T) {
	stores := openCluster(t, 3, func(i int, cfg *Config) { cfg.StaleReadBound = time.Hour })
	survivor := stores[0]
	eventually(t, 10*time.Second, "n1 in contact with a leader", func() bool { return !survivor.CutOff() })
	for _, s := range stores[1:] {
		s.Close()
	}
	eventually(t, 10*time.Second, "n1 steps down", func() bool { return !survivor.IsLeader() })
	f := NewForwarder(survivor, ForwardConfig{LeaderWait: time.Hour, Dial: newTestDialer(t).dial})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	_, err := f.Apply(ctx, registerCmd(testInstance("api", "0", "n1")))
	want := "this agent is cut off from the leader: no other voter has sent this agent a Raft message or answered one for"
	if !errors.Is(err, ErrNoLeader) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Apply on a voter no peer answers = %v, want ErrNoLeader saying %q", err, want)
	}
	if !apierr.IsNotApplied(err) {
		t.Fatalf("Apply on a voter no peer answers = %v, want it marked not applied", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("Apply on a voter no peer answers waited until the caller's deadline: %v", err)
	}
	// Its watches that require a leader and its sessions learn it too.
	if _, err := survivor.LeaderContact(); !errors.Is(err, ErrStaleRead) || !strings.Contains(err.Error(), "no other voter") {
		t.Fatalf("LeaderContact on a voter no peer answers = %v, want ErrStaleRead saying no voter answers", err)
	}
}

// TestForwarderOfAStoreNeverInContactWaitsForALeader: a store that has
// not heard from a leader since it opened (one joining a cluster) is cut
// off for reads, but its writes wait for a leader as long as leader_wait
// says: the leader may be about to reach it.
func TestForwarderOfAStoreNeverInContactWaitsForALeader(t *testing.T) {
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelWarn)
	cfg.Bootstrap = false
	cfg.StaleReadBound = 100 * time.Millisecond
	s := New(cfg)
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	const wait = 2 * time.Second
	f := NewForwarder(s, ForwardConfig{LeaderWait: wait, Dial: newTestDialer(t).dial})
	start := time.Now()
	_, err := f.Apply(t.Context(), registerCmd(testInstance("api", "0", "n1")))
	if !errors.Is(err, ErrNoLeader) || strings.Contains(err.Error(), "cut off") {
		t.Fatalf("Apply on a store that never had a leader = %v, want ErrNoLeader after leader_wait", err)
	}
	if waited := time.Since(start); waited < wait {
		t.Fatalf("Apply on a store that never had a leader gave up after %s, before leader_wait (%s)", waited, wait)
	}
}

// TestForwarderWithoutALeaderThoughGossipCountsAMajority: when no leader
// answers although gossip counts enough voters alive, the error says that
// gossip may lag (voters just lost) or an election is under way, rather
// than only "2 of 3 voters reachable; a leader needs 2".
func TestForwarderWithoutALeaderThoughGossipCountsAMajority(t *testing.T) {
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelWarn)
	cfg.Bootstrap = false
	s := New(cfg)
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	servers := []raft.Server{{ID: raft.ServerID(cfg.NodeID), Address: "127.0.0.1:1", Suffrage: raft.Voter},
		{ID: "n2", Address: "127.0.0.1:2", Suffrage: raft.Voter}, {ID: "n3", Address: "127.0.0.1:3", Suffrage: raft.Voter}}
	if err := s.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatal(err)
	}
	reach := func(id string) Reach {
		if id == "n3" {
			return Reach{Status: "failed"}
		}
		return Reach{Alive: true}
	}
	dial := func(context.Context, string) (grpc.ClientConnInterface, error) { return nil, errors.New("no peers") }
	f := NewForwarder(s, ForwardConfig{LeaderWait: 300 * time.Millisecond, Dial: dial, Reach: reach})
	err := f.OnLeader(t.Context(), func() error { return nil }, func(context.Context, grpc.ClientConnInterface) error { return nil })
	if !errors.Is(err, ErrNoLeader) || !strings.Contains(err.Error(), "2 of 3 voters reachable (n3 failed); a leader needs 2, by gossip's count: enough for a leader, so an election may be under way") {
		t.Fatalf("OnLeader without a leader, gossip counting 2 of 3 = %v", err)
	}
}

// silentLeaderCluster is forwardingCluster whose leader's Internal API
// takes calls and answers none until the test ends, and a Forwarder on a
// follower with leaderWait.
func silentLeaderCluster(t *testing.T, leaderWait time.Duration) (stores []*Store, leader *Store, api *internalAPI, f *Forwarder) {
	t.Helper()
	stores, apis := forwardingCluster(t)
	leader = leaderOf(t, stores)
	follower := stores[(indexOf(stores, leader)+1)%len(stores)]
	api = apis[indexOf(stores, leader)]
	api.gate = make(chan struct{})
	t.Cleanup(func() { close(api.gate) })
	return stores, leader, api, NewForwarder(follower, ForwardConfig{LeaderWait: leaderWait, Dial: newTestDialer(t).dial})
}
