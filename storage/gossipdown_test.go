package storage

import (
	"context"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// TestAgentsGossipDeclaredFailedAreNotAliveForTheBlobStore: the registry
// still records n2 and n3 passing (without a leader nobody records their
// failure), but this agent's gossip has declared them failed. Stat must
// call the blob unreadable and name their shards node-failed, List must
// say unreadable, Locate must give no address for them; this agent's own
// name never counts as down, and the blob is healthy again once gossip
// sees them back.
func TestAgentsGossipDeclaredFailedAreNotAliveForTheBlobStore(t *testing.T) {
	s, fc := newTestStore(t, Config{}, "n1", "n1", "n2", "n3")
	commitBlob(t, fc, "held", 2, 1, "n1", "n2", "n3")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	check := func(when, wantHealth string, wantState map[string]string) {
		t.Helper()
		st, err := s.Stat(ctx, "held", 0, pb.Consistency_DEFAULT)
		if err != nil {
			t.Fatalf("%s: stat: %v", when, err)
		}
		if st.Health != wantHealth {
			t.Errorf("%s: stat says %s, want %s", when, st.Health, wantHealth)
		}
		for _, sh := range st.Shards {
			if sh.State != wantState[sh.Node] {
				t.Errorf("%s: shard %d on %s is %s, want %s", when, sh.Index, sh.Node, sh.State, wantState[sh.Node])
			}
		}
		list, _, err := s.List(ctx, "held", pb.Consistency_DEFAULT)
		if err != nil || len(list) != 1 || list[0].Health != wantHealth {
			t.Errorf("%s: list = %v (%v), want held %s", when, list, err, wantHealth)
		}
		b, addrs, err := s.Locate(ctx, "held", 0, pb.Consistency_DEFAULT)
		if err != nil {
			t.Fatalf("%s: locate: %v", when, err)
		}
		for i, node := range b.Nodes {
			if up := wantState[node] == ShardOK; up != (addrs[i] != "") {
				t.Errorf("%s: locate gives %s the address %q; its shards are %s", when, node, addrs[i], wantState[node])
			}
		}
	}

	check("all passing", HealthHealthy, map[string]string{"n1": ShardOK, "n2": ShardOK, "n3": ShardOK})
	fc.setGossipDown("n2", true)
	check("n2 failed in gossip", HealthDegraded, map[string]string{"n1": ShardOK, "n2": ShardNodeFailed, "n3": ShardOK})
	fc.setGossipDown("n3", true)
	fc.setGossipDown("n1", true) // its own name: gossip about itself is not believed
	check("n2 and n3 failed in gossip", HealthUnreadable, map[string]string{"n1": ShardOK, "n2": ShardNodeFailed, "n3": ShardNodeFailed})
	fc.setGossipDown("n2", false)
	fc.setGossipDown("n3", false)
	check("n2 and n3 back", HealthHealthy, map[string]string{"n1": ShardOK, "n2": ShardOK, "n3": ShardOK})
}
