package node

import (
	"context"
	"strings"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
)

// TestStatusSaysWhatABootstrapExpectAgentWaitsFor: an agent started with
// bootstrap_expect 2 that sees only itself has no cluster, and its Status
// says why and what to do instead of calling it a wiped data dir.
func TestStatusSaysWhatABootstrapExpectAgentWaitsFor(t *testing.T) {
	cfg := testConfig(t)
	cfg.BootstrapExpect = 2
	n, err := New(cfg, WithLogger(testlog.New(t, cfg.Name)))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	conn, _ := dial(t, n.GRPCAddr())
	status := pb.NewStatusClient(conn)
	want := "bootstrap_expect is 2 and gossip sees 1 agents (n1); start the others with --bootstrap-expect 2"
	waitFor(t, 10*time.Second, "Status says what the agent waits for", func() bool {
		st, err := status.Status(ctxT(t), &pb.StatusRequest{})
		return err == nil && strings.Contains(st.Forming, want) && st.Leader == ""
	})
}
