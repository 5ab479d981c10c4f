package gossip

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestJoinRetryStopsWhenThisAgentsClusterWasRecoveredElsewhere: an agent
// whose cluster was recovered (zrpcd agent recover) on another agent holds
// Raft state from before the recovery; the recovered cluster never takes
// it back, so with gossip encrypted (members' meta authenticated)
// JoinRetry returns ErrRecoveredElsewhere (still an ErrOtherCluster) at
// its first refusal, saying what to do, instead of retrying until its
// context ends. Without encryption it retries: anyone answering at a join
// address could forge the meta that says so. A member of an unrelated
// cluster is retried as before: during a rollout a DNS name may point at
// old agents for a while.
func TestJoinRetryStopsWhenThisAgentsClusterWasRecoveredElsewhere(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	encrypted := func(cluster, recoveredFrom string) func(*Config) {
		return func(c *Config) {
			c.Meta.ClusterID, c.Meta.RecoveredFrom, c.EncryptKey = cluster, recoveredFrom, key
		}
	}
	recovered := startAgent(t, "a", encrypted(clusterY, clusterX))
	stale := startAgent(t, "b", encrypted(clusterX, ""))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := stale.JoinRetry(ctx, []string{recovered.LocalAddr()}, time.Second)
	if ctx.Err() != nil {
		t.Fatalf("JoinRetry kept retrying a cluster recovered from this agent's until its context ended: %v", err)
	}
	if !errors.Is(err, ErrRecoveredElsewhere) || !errors.Is(err, ErrOtherCluster) || !strings.Contains(err.Error(), "move its data dir aside") {
		t.Fatalf("the stale agent joins the recovered cluster: %v, want %v (and %v) saying what to do", err, ErrRecoveredElsewhere, ErrOtherCluster)
	}

	retried := func(t *testing.T, from *agent, to *agent) {
		t.Helper()
		short, cancelShort := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancelShort()
		err := from.JoinRetry(short, []string{to.LocalAddr()}, 200*time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrRecoveredElsewhere) {
			t.Fatalf("%s joins %s: %v, want retries until the context ends", from.name, to.name, err)
		}
	}
	retried(t, stale, startAgent(t, "c", encrypted(clusterY, "")))
	retried(t, startAgent(t, "d", inCluster(clusterX)),
		startAgent(t, "e", func(c *Config) { c.Meta.ClusterID, c.Meta.RecoveredFrom = clusterY, clusterX }))
}
