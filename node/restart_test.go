package node

import (
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
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
