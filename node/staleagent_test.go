package node_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// TestAgentWithStateFromBeforeARecoveryElsewhereIsRefused: the cluster was
// recovered (zrpcd agent recover) on one agent; another comes back with
// its data dir from before the recovery and --join. No retry can let it
// in, so, gossip being encrypted (the meta that says so authenticated),
// it stops retrying: the agent is refused (Refused, Refusal) with
// gossip.ErrRecoveredElsewhere, whose text tells the operator to move its
// data dir aside and start it empty with --join, and zrpcd exits with it.
func TestAgentWithStateFromBeforeARecoveryElsewhereIsRefused(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	c := testcluster.New(t, 2, testcluster.WithDeadNodeReap(time.Hour),
		testcluster.WithConfig(func(cfg *node.Config) { cfg.EncryptKey = key }))
	first := c.LeaderIndex()
	stale := 1 - first
	c.Kill(stale)
	c.Stop(first)
	rep, err := c.Recover(first, false)
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	c.Restart(first)
	c.WaitFor(20*time.Second, c.Name(first)+" leads alone under the new cluster id", func() bool {
		st, err := c.Status(first).Status(ctxT(t), &pb.StatusRequest{})
		return err == nil && st.Leader == c.Name(first) && st.ClusterId == rep.ClusterID
	})

	c.RestartJoining(stale)
	n := c.Node(stale)
	c.WaitFor(30*time.Second, c.Name(stale)+" refused, instead of retrying its join", func() bool {
		select {
		case <-n.Refused():
			return true
		default:
			return false
		}
	})
	if err := n.Refusal(); !errors.Is(err, gossip.ErrRecoveredElsewhere) || !strings.Contains(err.Error(), "move its data dir aside") {
		t.Fatalf("%s refused with %v, want %v saying what to do", c.Name(stale), err, gossip.ErrRecoveredElsewhere)
	}
}
