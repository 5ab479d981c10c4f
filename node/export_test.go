package node

import (
	"context"
	"net/http/httptest"

	dto "github.com/prometheus/client_model/go"
)

// What the package's external tests (package node_test, which run agents
// through testcluster) read and drive of an agent directly.

// CompareApplyHashes runs the leader's comparison of the replicas' apply
// hashes now, without waiting for its period; it returns how many peers it
// could compare.
func (n *Node) CompareApplyHashes(ctx context.Context) int { return n.compareApplyHashes(ctx) }

// CompareApplyHashesRestarting is CompareApplyHashes as if the Raft
// servers did (restart) or did not all apply an ApplyHashRestart, whatever
// state machine version they announce.
func (n *Node) CompareApplyHashesRestarting(ctx context.Context, restart bool) int {
	return n.compareApplyHashesRestarting(ctx, restart)
}

// ReplicaDivergences is zrpc_raft_replica_divergence_total.
func (n *Node) ReplicaDivergences() float64 {
	var m dto.Metric
	if err := n.metrics.divergence.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// RecentLogs is the log lines the agent keeps for `zrpcctl debug`.
func (n *Node) RecentLogs() string {
	rec := httptest.NewRecorder()
	n.logs.serve(rec, nil)
	return rec.Body.String()
}
