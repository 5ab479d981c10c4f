package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/fsmtest"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/raftstore"
)

// followerFake is a Cluster whose agent follows: the leader is reached
// through a connection that answers its read index (Internal.ReadIndex)
// as index, or, with noLeader, no leader answers at all.
type followerFake struct {
	leaderFake
	index    uint64
	noLeader bool
	asked    atomic.Int32 // calls of OnLeader
}

func (c *followerFake) OnLeader(ctx context.Context, _ func() error, remote func(context.Context, grpc.ClientConnInterface) error) error {
	c.asked.Add(1)
	if c.noLeader {
		return fmt.Errorf("%w: no leader elected", apierr.ErrNoLeader)
	}
	return remote(ctx, readIndexConn{c.index})
}

// readIndexConn is a connection to a leader whose read index is index.
type readIndexConn struct{ index uint64 }

func (c readIndexConn) Invoke(_ context.Context, method string, _ any, reply any, _ ...grpc.CallOption) error {
	if method != pb.Internal_ReadIndex_FullMethodName {
		return status.Errorf(codes.Unimplemented, "%s is not served here", method)
	}
	reply.(*pb.ReadIndexResponse).Index = c.index
	return nil
}

func (readIndexConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Error(codes.Unimplemented, "no streams here")
}

// startResumeRegistry serves a Registry over a replica holding three
// instances of a.rpc (revisions 1 to 3), asking cluster what the cluster
// has committed.
func startResumeRegistry(t *testing.T, cluster Cluster) (*fsmtest.Writer, *Registry, string) {
	t.Helper()
	fsm := raftstore.NewFSM(1 << 12)
	w := fsmtest.NewWriter(t, fsm)
	w.Register(inst("a.rpc", "a1"))
	w.Register(inst("a.rpc", "a2"))
	w.Register(inst("a.rpc", "a3"))
	reg := NewRegistry(context.Background(), RegistryConfig{Agent: "a1", Replica: fsm, Cluster: cluster, Metrics: &watchMetrics{}})
	return w, reg, serveTest(t, Services{Registry: reg})
}

// watchFrom opens a Watch of a.rpc after revision from and returns its
// first response, or how the stream ended, within 10 s.
func watchFrom(t *testing.T, addr string, from uint64) (pb.Registry_WatchClient, *pb.WatchResponse, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := pb.NewRegistryClient(dialTest(t, addr)).Watch(ctx, &pb.WatchRequest{Service: "a.rpc", FromRevision: from})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		resp *pb.WatchResponse
		err  error
	}
	got := make(chan result, 1)
	go func() {
		r, err := s.Recv()
		got <- result{r, err}
	}()
	select {
	case r := <-got:
		return s, r.resp, r.err
	case <-time.After(10 * time.Second):
		t.Fatalf("a watch resuming after revision %d got nothing in 10 s", from)
	}
	return nil, nil, nil
}

// A watch resuming after a revision past everything the cluster has
// committed (a client of a cluster since rebuilt from an older state,
// whose revisions are below the ones the client saw) starts over with a
// snapshot of the state, and then gets every event after it; it does not
// wait, silent and stale, for the registry to pass its revision.
func TestWatchResumingPastTheCommitIndexGetsASnapshot(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster Cluster
	}{
		{"on the leader", leaderFake{}},
		{"on a follower", &followerFake{index: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, _, addr := startResumeRegistry(t, tc.cluster)
			s, first, err := watchFrom(t, addr, 40)
			if err != nil {
				t.Fatalf("the watch ended: %v, want a snapshot", err)
			}
			if !first.Snapshot || first.Header.GetRevision() != 3 || len(first.Events) != 3 {
				t.Fatalf("first response: snapshot %v at revision %d with %d instances; want the snapshot of a.rpc's 3 instances at revision 3",
					first.Snapshot, first.Header.GetRevision(), len(first.Events))
			}
			w.Register(inst("a.rpc", "a4"))
			next, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if next.Snapshot || len(next.Events) != 1 || next.Events[0].Revision != 4 || next.Events[0].GetInstance().GetId() != "a4" {
				t.Fatalf("after the snapshot: %v, want the registration of a4 at revision 4", next)
			}
		})
	}
}

// A watch resuming past a follower's replica, after a revision the leader
// has committed, waits for the follower to catch up and gets only the
// events after its revision: no snapshot that would take its view back.
func TestWatchResumingPastALaggingFollowerWaitsForIt(t *testing.T) {
	w, reg, addr := startResumeRegistry(t, &followerFake{index: 6})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := pb.NewRegistryClient(dialTest(t, addr)).Watch(ctx, &pb.WatchRequest{Service: "a.rpc", FromRevision: 5})
	if err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "the watch open", func() bool { return reg.Streams().Watches == 1 })
	w.Register(inst("a.rpc", "a4"), inst("a.rpc", "a5"), inst("a.rpc", "a6"))
	resp, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.Snapshot || len(resp.Events) != 1 || resp.Events[0].Revision != 6 {
		t.Fatalf("first response %v, want the one event after revision 5 (a6 at 6)", resp)
	}
}

// When no leader can be asked whether the revision a watch resumes after
// was committed, the watch is refused as stale (a client moves to another
// agent, or retries) rather than left waiting with a view it cannot check.
func TestWatchResumingPastTheReplicaWithNoLeaderIsRefusedAsStale(t *testing.T) {
	_, _, addr := startResumeRegistry(t, &followerFake{noLeader: true})
	_, resp, err := watchFrom(t, addr, 40)
	if err == nil {
		t.Fatalf("the watch answered %v, want it refused", resp)
	}
	if status.Code(err) != codes.Unavailable || !errors.Is(apierr.FromStatus(err), apierr.ErrStaleRead) ||
		!strings.Contains(err.Error(), "revision 40") {
		t.Fatalf("the watch ended with %v, want Unavailable STALE_READ naming revision 40", err)
	}
}

// The same on a WatchMany stream: a watch resuming past the commit index
// gets a snapshot, one resuming past a lagging follower waits for its
// events, and with no leader to ask the watch alone is refused as stale.
func TestWatchManyResumingPastTheReplica(t *testing.T) {
	t.Run("past the commit index", func(t *testing.T) {
		w, _, addr := startResumeRegistry(t, &followerFake{index: 3})
		m := openMany(t, addr)
		m.create(1, "a.rpc", 40)
		if got := describe(m.next()); got != "1:snapshot[a.rpc/a1,a.rpc/a2,a.rpc/a3]" {
			t.Fatalf("watch resuming after revision 40: %s, want its snapshot", got)
		}
		w.Register(inst("a.rpc", "a4"))
		if got := describe(m.next()); got != "1:events[a.rpc/a4]" {
			t.Fatalf("after the snapshot: %s, want a4", got)
		}
	})
	t.Run("a lagging follower", func(t *testing.T) {
		w, reg, addr := startResumeRegistry(t, &followerFake{index: 6})
		m := openMany(t, addr)
		m.create(1, "a.rpc", 5)
		m.create(2, "a.rpc", 4)
		testwait.For(t, 10*time.Second, "both watches open", func() bool { return reg.Streams().Watches == 3 })
		w.Register(inst("a.rpc", "a4"), inst("a.rpc", "a5"), inst("a.rpc", "a6"))
		got := map[string]bool{describe(m.next()): true, describe(m.next()): true}
		if !got["1:events[a.rpc/a6]"] || !got["2:events[a.rpc/a5,a.rpc/a6]"] {
			t.Fatalf("responses %v, want a6 on watch 1 and a5, a6 on watch 2", got)
		}
	})
	t.Run("no leader", func(t *testing.T) {
		cluster := &followerFake{noLeader: true}
		_, _, addr := startResumeRegistry(t, cluster)
		m := openMany(t, addr)
		m.create(1, "a.rpc", 40)
		m.create(3, "a.rpc", 41)
		for _, want := range []struct{ id, from uint64 }{{1, 40}, {3, 41}} {
			r := m.next()
			if r.WatchId != want.id || codes.Code(r.GetEnded().GetCode()) != codes.Unavailable || r.GetEnded().GetReason() != apierr.Code(apierr.ErrStaleRead) ||
				!strings.Contains(r.GetEnded().GetMessage(), fmt.Sprintf("revision %d", want.from)) {
				t.Fatalf("watch resuming after revision %d with no leader: %v, want it ended Unavailable STALE_READ naming its revision", want.from, r)
			}
		}
		if n := cluster.asked.Load(); n != 1 {
			t.Errorf("the leader was looked for %d times, want once: the second watch, right after, is refused for the same reason", n)
		}
		m.create(2, "a.rpc", 0)
		if got := describe(m.next()); got != "2:snapshot[a.rpc/a1,a.rpc/a2,a.rpc/a3]" {
			t.Fatalf("the next watch: %s, want its snapshot", got)
		}
	})
}

// A watch that started over with a snapshot, resuming past the commit
// index, and is then too slow, names the revision of what it was sent
// since (the snapshot's), not the one of another history it resumed
// after: a client resuming from there would skip every event up to it.
func TestWatchPastTheCommitIndexTooSlowNamesTheSnapshotsRevision(t *testing.T) {
	fsm := raftstore.NewFSM(1 << 12)
	w := fsmtest.NewWriter(t, fsm)
	w.Register(inst("a.rpc", "a1"))
	reg := NewRegistry(context.Background(), RegistryConfig{Agent: "a1", Replica: fsm, Cluster: leaderFake{}, Metrics: &watchMetrics{},
		WatchBacklog: WatchLimits{Events: 5, Bytes: 1 << 20}})
	done := make(chan watchResult, 1)
	s := startWatch(t, reg, &pb.WatchRequest{Service: "a.rpc", FromRevision: 40}, 1, done)
	<-s.sent // the snapshot at revision 1; the reader stops now
	w.Register(inst("a.rpc", "a2"))
	testwait.For(t, 10*time.Second, "the send of a2 waiting for the reader", func() bool { return stackHas("(*stalledStream).Send(") })
	for i := range 20 {
		w.Register(inst("a.rpc", fmt.Sprint("b", i)))
	}
	var r watchResult
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the stalled watch was not ended")
	}
	st := status.Convert(r.err)
	var resume *pb.WatchResume
	for _, d := range st.Details() {
		if d, ok := d.(*pb.WatchResume); ok {
			resume = d
		}
	}
	if !errors.Is(apierr.FromStatus(r.err), apierr.ErrWatchTooSlow) || resume == nil || resume.Revision != 1 {
		t.Fatalf("ended with %v (resume detail %v), want too slow, resume from revision 1 (the snapshot's)", r.err, resume)
	}
}
