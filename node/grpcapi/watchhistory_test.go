package grpcapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/fsmtest"
	"github.com/zrpcio/zrpc/raftstore"
)

// clusterReplica is a replica of the cluster named id.
type clusterReplica struct {
	*raftstore.FSM
	id string
}

func (r clusterReplica) ClusterID() string { return r.id }

// startClusterRegistry serves a Registry over a replica of cluster id
// holding three instances of a.rpc (revisions 1 to 3).
func startClusterRegistry(t *testing.T, id string) string {
	t.Helper()
	fsm := raftstore.NewFSM(1 << 12)
	w := fsmtest.NewWriter(t, fsm)
	w.Register(inst("a.rpc", "a1"))
	w.Register(inst("a.rpc", "a2"))
	w.Register(inst("a.rpc", "a3"))
	reg := NewRegistry(context.Background(), RegistryConfig{Agent: "a1", Replica: clusterReplica{fsm, id}, Cluster: leaderFake{}, Metrics: &watchMetrics{}})
	return serveTest(t, Services{Registry: reg})
}

// A watch resuming after a revision of another cluster's history (the
// cluster it watched was rebuilt from an older state, and its revisions
// started over, so the revision is at or below this replica's) starts
// over with a snapshot of this cluster's state, instead of taking the
// revision as one of this history; a watch naming this cluster, or none
// (a client from before cluster ids), resumes after it.
func TestWatchManyResumingAnotherClustersRevisionGetsASnapshot(t *testing.T) {
	addr := startClusterRegistry(t, "c2")
	m := openMany(t, addr)
	for _, tc := range []struct {
		id      uint64
		cluster string
		want    string
	}{
		{1, "c1", "1:snapshot[a.rpc/a1,a.rpc/a2,a.rpc/a3]"},
		{2, "c2", "2:events[a.rpc/a3]"},
		{3, "", "3:events[a.rpc/a3]"},
	} {
		err := m.stream.Send(&pb.WatchManyRequest{Kind: &pb.WatchManyRequest_Create{Create: &pb.WatchCreate{
			WatchId: tc.id, Watch: &pb.WatchRequest{Service: "a.rpc", FromRevision: 2, ClusterId: tc.cluster}}}})
		if err != nil {
			t.Fatal(err)
		}
		r := m.next()
		if got := describe(r); got != tc.want || r.GetResponse().GetClusterId() != "c2" {
			t.Fatalf("a watch of cluster %q resuming after revision 2: %s naming cluster %q; want %s naming cluster c2",
				tc.cluster, got, r.GetResponse().GetClusterId(), tc.want)
		}
	}
}

// The first response of a Watch names the agent's cluster, so that a
// client resumes with it; later responses of events do not.
func TestWatchNamesItsCluster(t *testing.T) {
	addr := startClusterRegistry(t, "c2")
	_, first, err := watchFrom(t, addr, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Snapshot || first.ClusterId != "c2" {
		t.Fatalf("first response: snapshot %v naming cluster %q; want the snapshot naming cluster c2", first.Snapshot, first.ClusterId)
	}
	_, first, err = watchFrom(t, addr, 1)
	if err != nil {
		t.Fatal(err)
	}
	if first.Snapshot || first.ClusterId != "c2" {
		t.Fatalf("first response after revision 1: snapshot %v naming cluster %q; want events naming cluster c2", first.Snapshot, first.ClusterId)
	}
}

// A watch resuming after a revision the cluster has committed and this
// follower has not applied is refused Unavailable, saying how far behind
// the agent is, once the follower has not caught up within
// resumeLagWait: the client then resumes on another agent instead of
// waiting on this one without end. On a WatchMany stream that watch
// alone ends; the stream goes on.
func TestWatchResumingPastAFollowerThatDoesNotCatchUpIsRefused(t *testing.T) {
	wantBehind := func(t *testing.T, code codes.Code, msg string) {
		t.Helper()
		if code != codes.Unavailable || !strings.Contains(msg, "agent a1 is 2 revisions behind the requested revision 5") ||
			!strings.Contains(msg, "another agent") {
			t.Fatalf("the watch ended %v %q, want Unavailable: agent a1 is 2 revisions behind the requested revision 5", code, msg)
		}
	}
	t.Run("Watch", func(t *testing.T) {
		_, _, addr := startResumeRegistry(t, &followerFake{index: 6})
		_, resp, err := watchFrom(t, addr, 5)
		if err == nil {
			t.Fatalf("the watch answered %v, want it refused", resp)
		}
		wantBehind(t, status.Code(err), status.Convert(err).Message())
	})
	t.Run("WatchMany", func(t *testing.T) {
		_, _, addr := startResumeRegistry(t, &followerFake{index: 6})
		m := openMany(t, addr)
		m.create(1, "a.rpc", 5)
		r := m.next()
		wantBehind(t, codes.Code(r.GetEnded().GetCode()), r.GetEnded().GetMessage())
		m.create(2, "a.rpc", 0)
		if got := describe(m.next()); got != "2:snapshot[a.rpc/a1,a.rpc/a2,a.rpc/a3]" {
			t.Fatalf("the next watch: %s, want its snapshot", got)
		}
	})
}

// A plain Watch (the stream other clients use) resuming after a revision
// of another cluster's history starts over with a snapshot too.
func TestWatchResumingAnotherClustersRevisionGetsASnapshot(t *testing.T) {
	addr := startClusterRegistry(t, "c2")
	for _, tc := range []struct {
		cluster  string
		snapshot bool
	}{{"c1", true}, {"c2", false}, {"", false}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := pb.NewRegistryClient(dialTest(t, addr)).Watch(ctx, &pb.WatchRequest{Service: "a.rpc", FromRevision: 2, ClusterId: tc.cluster})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		r, err := s.Recv()
		cancel()
		if err != nil {
			t.Fatalf("a watch of cluster %q resuming after revision 2: %v", tc.cluster, err)
		}
		if r.Snapshot != tc.snapshot || (tc.snapshot && len(r.Events) != 3) {
			t.Fatalf("a watch of cluster %q resuming after revision 2 on cluster c2: snapshot %v with %d events, want snapshot %v",
				tc.cluster, r.Snapshot, len(r.Events), tc.snapshot)
		}
	}
}
