package node

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	wal "github.com/hashicorp/raft-wal"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/internal/testlog"
)

// startErr starts an agent on cfg and returns Start's error.
func startErr(t *testing.T, cfg Config) error {
	t.Helper()
	n, err := New(cfg, WithLogger(testlog.New(t, cfg.Name)))
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	n.Close()
	return err
}

// wantRefusedUntouched starts an agent on cfg and checks that Start
// refuses with the rejoin advice and changes no file of the data dir.
func wantRefusedUntouched(t *testing.T, cfg Config, evidence string) {
	t.Helper()
	before := snapshotDir(t, cfg.DataDir)
	err := startErr(t, cfg)
	if err == nil {
		t.Fatal("Start succeeded on a data dir that lost its Raft log")
	}
	for _, want := range []string{"raft.db", "zrpcctl raft remove-peer " + cfg.Name, "empty --data-dir", evidence} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start error does not say %q:\n%v", want, err)
		}
	}
	after := snapshotDir(t, cfg.DataDir)
	if len(after) != len(before) {
		t.Errorf("data dir had %d files, now %d", len(before), len(after))
	}
	for name, content := range before {
		if after[name] != content {
			t.Errorf("%s was changed or removed", name)
		}
	}
}

func TestLostRaftLogIsRefusedAndShardsUntouched(t *testing.T) {
	cfg := testConfig(t)
	cfg.BlobOrphanGrace = 10 * time.Millisecond
	n := startNode(t, cfg)
	waitFor(t, 10*time.Second, "the cluster id recorded in the data dir", func() bool {
		b, err := os.ReadFile(filepath.Join(cfg.DataDir, clusterIDFile))
		return err == nil && strings.TrimSpace(string(b)) == n.Store().FSM().ClusterID() && len(b) > 1
	})
	cl, err := client.New(client.Config{Endpoints: []string{n.GRPCAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	data := bytes.Repeat([]byte("zrpc"), 64<<10) // over the inline limit: stored as shards
	if _, err := cl.PutBlob(ctxT(t), "model.bin", bytes.NewReader(data), client.PutOptions{}); err != nil {
		t.Fatalf("PutBlob: %v", err)
	}
	clusterID := n.Store().FSM().ClusterID()
	n.Close()
	if countFiles(filepath.Join(cfg.DataDir, shardsDirName)) == 0 {
		t.Fatal("the blob left no shard files")
	}
	if err := os.RemoveAll(filepath.Join(cfg.DataDir, raftDirName, raftWALDir)); err != nil {
		t.Fatal(err)
	}
	wantRefusedUntouched(t, cfg, clusterID)
}

func TestDataDirOfAClusterMemberNeedsItsRaftLog(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef"
	cases := []struct {
		name     string
		file     string
		content  string
		evidence string
	}{
		{"node id only", nodeIDFile, "n1\n", nodeIDFile},
		{"cluster id", clusterIDFile, id + "\n", id},
		{"peers", peersFile, `["127.0.0.1:8402"]`, peersFile},
		{"shards", filepath.Join(shardsDirName, "ab", "abcdef", "0.0.shard"), "shard", "1 files under shards/"},
		{"snapshots", filepath.Join(raftDirName, "snapshots", "2-10-1", "state.bin"), "snap", "Raft snapshots"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			os.WriteFile(filepath.Join(cfg.DataDir, nodeIDFile), []byte(cfg.Name+"\n"), 0o600)
			p := filepath.Join(cfg.DataDir, tc.file)
			os.MkdirAll(filepath.Dir(p), 0o700)
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			wantRefusedUntouched(t, cfg, tc.evidence)
		})
	}
}

func TestAgentRestartsWithItsClusterID(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	waitFor(t, 10*time.Second, "the cluster id recorded", func() bool {
		_, err := os.Stat(filepath.Join(cfg.DataDir, clusterIDFile))
		return err == nil
	})
	id := n.Store().FSM().ClusterID()
	n.Close()
	again := startNode(t, cfg)
	if got := again.clusterID(); got != id {
		t.Fatalf("restarted agent's cluster id %q, want %q", got, id)
	}
}

func TestAgentsOfAnotherClusterCannotJoin(t *testing.T) {
	cfgA, cfgB := testConfig(t), testConfig(t)
	cfgA.Name, cfgB.Name = "a1", "b1"
	a, b := startNode(t, cfgA), startNode(t, cfgB)
	for _, n := range []*Node{a, b} {
		waitFor(t, 10*time.Second, n.Name()+" announces its cluster id by gossip", func() bool {
			for _, m := range n.gossip().Members() {
				if m.Name == n.Name() {
					return m.Meta.ClusterID != "" && m.Meta.ClusterID == n.Store().FSM().ClusterID()
				}
			}
			return false
		})
	}
	idA, idB := a.clusterID(), b.clusterID()
	if idA == idB {
		t.Fatalf("two separate clusters have the same id %s", idA)
	}
	// A new leader writes the cluster's identity and then its own node
	// record: the revisions below are taken once both are applied.
	for _, n := range []*Node{a, b} {
		waitFor(t, 10*time.Second, n.Name()+" records itself in its registry", func() bool {
			return n.Store().FSM().Node(n.Name()) != nil
		})
	}
	revA, revB := a.Store().FSM().Revision(), b.Store().FSM().Revision()

	_, err := b.gossip().Join(ctxT(t), []string{a.gossip().LocalAddr()})
	if err == nil || !strings.Contains(err.Error(), idA) || !strings.Contains(err.Error(), idB) {
		t.Fatalf("b1 joins a1's cluster: %v, want a refusal naming both clusters", err)
	}
	_, err = a.gossip().Join(ctxT(t), []string{b.gossip().LocalAddr()})
	if err == nil {
		t.Fatal("a1 joined b1's cluster")
	}
	for _, n := range []*Node{a, b} {
		if ms := n.gossip().Members(); len(ms) != 1 {
			t.Errorf("%s's gossip lists %+v, want only itself", n.Name(), ms)
		}
		if nodes := n.Store().FSM().Nodes(); len(nodes) != 1 || nodes[0].Name != n.Name() {
			t.Errorf("%s's registry lists nodes %v, want only itself", n.Name(), nodes)
		}
		servers, _ := n.Store().Servers()
		if len(servers) != 1 {
			t.Errorf("%s's Raft configuration is %v, want only itself", n.Name(), servers)
		}
	}
	// A reconcile pass on each leader changes nothing either.
	for _, n := range []*Node{a, b} {
		if err := n.newReconciler().reconcile(ctxT(t), time.Now()); err != nil {
			t.Errorf("%s reconcile: %v", n.Name(), err)
		}
	}
	if a.Store().FSM().Revision() != revA || b.Store().FSM().Revision() != revB {
		t.Errorf("registries changed: a1 %d -> %d, b1 %d -> %d", revA, a.Store().FSM().Revision(), revB, b.Store().FSM().Revision())
	}
}

// startJoined starts an agent that joins through the gossip address join.
func startJoined(t *testing.T, cfg Config, join string) *Node {
	t.Helper()
	cfg.Join = []string{join}
	n, err := New(cfg, WithLogger(testlog.New(t, cfg.Name)))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatalf("Start %s: %v", cfg.Name, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func raftServers(n *Node) []string {
	servers, err := n.Store().Servers()
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range servers {
		out = append(out, s.ID)
	}
	return out
}

func TestAgentThatLostItsRaftLogRejoinsAsANewMember(t *testing.T) {
	cfg1 := testConfig(t)
	n1 := startNode(t, cfg1)
	cfg2, cfg3 := testConfig(t), testConfig(t)
	cfg2.Name, cfg3.Name = "n2", "n3"
	n2 := startJoined(t, cfg2, n1.gossip().LocalAddr())
	n3 := startJoined(t, cfg3, n1.gossip().LocalAddr())
	waitFor(t, 20*time.Second, "three Raft servers and n3 in the cluster", func() bool {
		return len(raftServers(n1)) == 3 && n3.Store().FSM().ClusterID() != ""
	})
	id := n1.Store().FSM().ClusterID()
	conn, reg := dial(t, n1.GRPCAddr())
	if _, err := reg.Register(ctxT(t), &pb.RegisterRequest{Instance: inst("user.rpc", "u1", "127.0.0.1:9001")}); err != nil {
		t.Fatal(err)
	}

	// n3's disk is replaced: its Raft log is gone, the rest is not.
	waitFor(t, 10*time.Second, "n3 recorded the cluster id", func() bool {
		_, err := os.Stat(filepath.Join(cfg3.DataDir, clusterIDFile))
		return err == nil
	})
	// It keeps its addresses, as an agent on a repaired machine does.
	cfg3.GRPCPort, cfg3.RaftPort, cfg3.GossipPort = portOf(t, n3.GRPCAddr()), portOf(t, n3.Store().RaftAddr()), portOf(t, n3.gossip().LocalAddr())
	n3.Close()
	os.RemoveAll(filepath.Join(cfg3.DataDir, raftDirName, raftWALDir))
	wantRefusedUntouched(t, cfg3, id)

	// The operator removes it, as the refusal says, through any agent.
	status := pb.NewStatusClient(conn)
	waitFor(t, 20*time.Second, "n3 removed", func() bool {
		_, err := status.RemovePeer(ctxT(t), &pb.RemovePeerRequest{Name: "n3"})
		return err == nil
	})
	if got := raftServers(n1); len(got) != 2 {
		t.Fatalf("Raft servers after remove-peer: %v", got)
	}

	// It comes back as a new member with an empty data dir.
	fresh := cfg3
	fresh.DataDir = t.TempDir()
	back := startJoined(t, fresh, n2.gossip().LocalAddr())
	waitFor(t, 20*time.Second, "n3 back in Raft with the cluster's id and registry", func() bool {
		return len(raftServers(n1)) == 3 && back.Store().FSM().ClusterID() == id &&
			back.Store().FSM().Instance("user.rpc", "u1") != nil
	})
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func TestEmptyRaftLogOfAClusterMemberIsRefused(t *testing.T) {
	cfg := testConfig(t)
	cfg.Bootstrap = false // creates the Raft log, joins nothing
	n, err := New(cfg, WithLogger(testlog.New(t, cfg.Name)))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	n.Close()
	// An empty Raft log in a data dir of a cluster member.
	const id = "0123456789abcdef0123456789abcdef"
	os.WriteFile(filepath.Join(cfg.DataDir, clusterIDFile), []byte(id+"\n"), 0o600)
	cfg.Bootstrap = true
	err = startErr(t, cfg)
	if err == nil || !strings.Contains(err.Error(), "has no Raft state") || !strings.Contains(err.Error(), "remove-peer n1") {
		t.Fatalf("Start: %v, want the lost Raft log refusal", err)
	}
	logs, err := wal.Open(filepath.Join(cfg.DataDir, raftDirName, raftWALDir))
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	if last, err := logs.LastIndex(); err != nil || last != 0 {
		t.Fatalf("raft log last index %d (%v): the refused agent bootstrapped", last, err)
	}
}
