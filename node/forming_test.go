package node

import (
	"strings"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// TestStatusSaysWhatABootstrapExpectAgentWaitsFor: an agent started with
// bootstrap_expect 2 that sees only itself has no cluster, and its Status
// says why and what to do instead of calling it a wiped data dir.
func TestStatusSaysWhatABootstrapExpectAgentWaitsFor(t *testing.T) {
	cfg := testConfig(t)
	cfg.BootstrapExpect = 2
	n := startedNode(t, cfg)
	conn, _ := dial(t, n.GRPCAddr())
	status := pb.NewStatusClient(conn)
	want := "bootstrap_expect is 2 and gossip sees 1 agents (n1); start the others with --bootstrap-expect 2"
	waitFor(t, 10*time.Second, "Status says what the agent waits for", func() bool {
		st, err := status.Status(ctxT(t), &pb.StatusRequest{})
		return err == nil && strings.Contains(st.Forming, want) && st.Leader == ""
	})
}

// TestClusterFSMVersionCountsWhatItCannotKnowAsTheOldest: the agent's own
// version for itself; an agent neither gossip nor the registry knows
// counts as version 1; one gossip has forgotten counts as its node record
// says.
func TestClusterFSMVersionCountsWhatItCannotKnowAsTheOldest(t *testing.T) {
	n := startNode(t, testConfig(t))
	if got := n.clusterFSMVersion(); got != raftstore.FSMVersion {
		t.Fatalf("one agent: version %d, want this build's %d", got, raftstore.FSMVersion)
	}
	if got := n.clusterFSMVersion("ghost"); got != 1 {
		t.Fatalf("with an agent no one knows: version %d, want 1", got)
	}
	if _, err := n.store.Apply(ctxT(t), &pb.Command{Kind: &pb.Command_NodeUpsert{NodeUpsert: &pb.Node{Name: "ghost", FsmVersion: 2}}}); err != nil {
		t.Fatal(err)
	}
	if got := n.clusterFSMVersion("ghost"); got != 2 {
		t.Fatalf("with an agent whose node record says 2: version %d, want 2", got)
	}
}
