package node

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/testlog"
)

// TestALeaderCannotOverwriteTheLogOfAnAgentOfAnotherCluster: n1 leads
// cluster A; n2, with a data dir of its own, leads cluster B. n1's leader
// adds n2's Raft address as a voter, as a leader whose configuration
// still names an address that an agent of another cluster now uses would
// send to it. Raft alone would make n2 follow n1 and take n1's log over
// its own; the cluster hello must keep n2 leading cluster B with its own
// state and configuration, and both agents must log why.
func TestALeaderCannotOverwriteTheLogOfAnAgentOfAnotherCluster(t *testing.T) {
	var logsA, logsB testlog.Buffer
	logTo := func(buf *testlog.Buffer) Option {
		return WithLogger(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("n1's log:\n%s\nn2's log:\n%s", logsA.String(), logsB.String())
		}
	})
	a := startNode(t, testConfig(t), logTo(&logsA))
	cfgB := testConfig(t)
	cfgB.Name = "n2"
	b := startNode(t, cfgB, logTo(&logsB))
	waitFor(t, 10*time.Second, "both clusters to have their ids", func() bool {
		return a.Store().FSM().ClusterID() != "" && b.Store().FSM().ClusterID() != ""
	})
	idB, revB := b.Store().FSM().ClusterID(), b.Store().FSM().Revision()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	added := make(chan struct{})
	go func() {
		defer close(added)
		_ = a.Store().AddVoter(ctx, "n2", b.Store().RaftAddr()) // cannot commit: n2 never answers
	}()
	for ctx.Err() == nil {
		if !b.Store().IsLeader() {
			t.Fatal("n2 stopped leading its own cluster: n1's Raft messages reached it")
		}
		time.Sleep(20 * time.Millisecond)
	}
	<-added
	if servers, err := b.Store().Servers(); err != nil || len(servers) != 1 || servers[0].ID != "n2" {
		t.Errorf("n2's Raft configuration is %v (%v), want n2 alone", servers, err)
	}
	if id, rev := b.Store().FSM().ClusterID(), b.Store().FSM().Revision(); id != idB || rev < revB {
		t.Errorf("n2's state changed: cluster %s at revision %d, was %s at %d", id, rev, idB, revB)
	}
	if !strings.Contains(logsB.String(), "refused a Raft connection from an agent of another cluster") {
		t.Error("n2's log does not say it refused n1's Raft connection")
	}
	if !strings.Contains(logsA.String(), "belongs to an agent of another cluster") {
		t.Error("n1's log does not say n2's address belongs to an agent of another cluster")
	}
}
