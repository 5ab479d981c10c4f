//go:build !race

package node_test

import (
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/testcluster"
)

// This file builds without the race detector only, and `make test` runs it
// so: when the leader moves a follower to a new address in the Raft
// configuration, hashicorp/raft v1.8.0 swaps the follower's peer record
// under its lock (raft.go, startStopReplication) while the replication
// goroutine reads the peer's ID without it (replication.go,
// updateLastAppended). The ID is the same before and after, so the read is
// harmless, but -race reports it.

// TestAgentsAllRestartedAtNewAddressesElectALeader: every agent of the
// cluster comes back at a new address (Kubernetes pods rescheduled with
// new IPs), so every Raft address in the configuration is stale. Raft
// dials the addresses gossip knows, a leader is elected, and the
// configuration moves to the new addresses; the registry is intact.
func TestAgentsAllRestartedAtNewAddressesElectALeader(t *testing.T) {
	c := testcluster.New(t, 3)
	register(t, c, 0, "user.rpc", "u1")
	for i := range c.Size() {
		c.Kill(i)
	}
	for i := range c.Size() {
		c.RestartMoved(i)
	}
	c.WaitFor(60*time.Second, "a leader with every agent at its new Raft address", func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		servers, err := l.Store().Servers()
		if err != nil || len(servers) != c.Size() {
			return false
		}
		for _, s := range servers {
			for i := range c.Size() {
				if n := c.Node(i); n != nil && c.Name(i) == s.ID && n.Store().RaftAddr() != s.Address {
					return false
				}
			}
		}
		return true
	})
	if got := instances(t, c, 1, "user.rpc", pb.Consistency_CONSISTENT); got["u1"] == nil {
		t.Fatalf("user.rpc after the move: %v; want u1", got)
	}
	register(t, c, 2, "user.rpc", "u2")
}
