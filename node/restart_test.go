package node

import (
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/node/health"
	"github.com/zrpcio/zrpc/raftstore"
)

// A single agent leads and serves consistent reads soon after it starts,
// both when it bootstraps and when it restarts with state, without
// waiting its Raft heartbeat timeout (20 s here: startNode waits 10 s).
func TestSingleAgentRestartLeadsWithoutWaitingForHeartbeatTimeout(t *testing.T) {
	cfg := testConfig(t)
	cfg.RaftHeartbeatTimeout = 20 * time.Second
	cfg.RaftElectionTimeout = 20 * time.Second
	cfg.RaftLeaderLease = 20 * time.Second
	n := startNode(t, cfg)
	_, c := dial(t, n.GRPCAddr())
	if _, err := c.Register(ctxT(t), &pb.RegisterRequest{Instance: inst("user.rpc", "i1", "127.0.0.1:9000")}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	n.Close()

	again := startNode(t, cfg)
	_, c = dial(t, again.GRPCAddr())
	var got []*pb.Instance
	waitFor(t, 10*time.Second, "a consistent read after the restart", func() bool {
		resp, err := c.Get(ctxT(t), &pb.GetRequest{Service: "user.rpc", Consistency: pb.Consistency_CONSISTENT})
		got = resp.GetInstances()
		return err == nil
	})
	if len(got) != 1 || got[0].Id != "i1" {
		t.Fatalf("after the restart user.rpc has %v, want i1", got)
	}
}

// An agent that a leader marked failed, and that leads next (here: the only
// agent, restarted; in a cluster: one that wins an election right after a
// partition heals), marks itself and its instances passing again: no other
// leader sees it come back, and its reconciler does not look at itself.
// The same for the instances a reap of the agent kept.
func TestAnAgentMarkedFailedMarksItselfAliveWhenItLeads(t *testing.T) {
	for _, tc := range []struct {
		name string
		mark *pb.Command
	}{
		{"failed", &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: &pb.SetHealth{Node: "n1", Health: pb.Health_CRITICAL, Output: "agent failed: no gossip contact"}}}},
		{"reaped", &pb.Command{Kind: &pb.Command_NodeRemove{NodeRemove: &pb.NodeRemove{Name: "n1", KeepUnbound: true, Output: raftstore.ReapedOutputPrefix + " n1: failed"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			n := startNode(t, cfg)
			_, c := dial(t, n.GRPCAddr())
			if _, err := c.Register(ctxT(t), &pb.RegisterRequest{Instance: inst("user.rpc", "i1", "127.0.0.1:9000")}); err != nil {
				t.Fatalf("Register: %v", err)
			}
			// A leader marks an agent it knows: n1 has recorded itself
			// (announceSelf, when it began to lead), or the mark would
			// precede the record that the restart compares with.
			waitFor(t, 10*time.Second, "n1's node record", func() bool { return n.Store().FSM().Node("n1") != nil })
			// What the leader that lost contact with n1 committed.
			if _, err := n.Store().Apply(ctxT(t), tc.mark); err != nil {
				t.Fatalf("apply the %s mark: %v", tc.name, err)
			}
			if h := healthOf(t, c, "user.rpc", "i1"); h != pb.Health_CRITICAL {
				t.Fatalf("after the %s mark i1 is %v, want CRITICAL", tc.name, h)
			}
			n.Close()

			again := startNode(t, cfg)
			_, c = dial(t, again.GRPCAddr())
			var got *pb.Instance
			var rec *pb.Node
			if !testwait.Until(10*time.Second, func() bool {
				got, rec = again.Store().FSM().Instance("user.rpc", "i1"), again.Store().FSM().Node("n1")
				return got.GetHealth() == pb.Health_PASSING && got.GetHealthOutput() == health.AgentAliveAgain && rec.GetHealth() == pb.Health_PASSING
			}) {
				t.Fatalf("10 s after n1 leads again: i1 is %v (%q), n1's record %v; want both passing, i1 saying %q",
					got.GetHealth(), got.GetHealthOutput(), rec, health.AgentAliveAgain)
			}
			if h := healthOf(t, c, "user.rpc", "i1"); h != pb.Health_PASSING {
				t.Errorf("a consistent read of i1: %v, want PASSING", h)
			}
		})
	}
}
