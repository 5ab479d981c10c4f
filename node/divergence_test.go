package node_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/snapshot"
	"github.com/zrpcio/zrpc/testcluster"
)

// caughtUp waits until every agent of c has applied the leader's revision.
func caughtUp(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	c.WaitFor(20*time.Second, "every replica at the leader's revision", func() bool {
		want := c.Leader().Store().FSM().Revision()
		for i := range c.Size() {
			if c.Node(i).Store().FSM().Revision() < want {
				return false
			}
		}
		return true
	})
}

// Replicas that applied the same writes agree, however they got them: a
// restart from a snapshot and the log after it, or a data dir replaced and
// filled again from the leader.
func TestLeaderFindsNoDivergenceAmongReplicasThatAgree(t *testing.T) {
	c := testcluster.New(t, 3)
	for i := range 5 {
		register(t, c, i%3, "api", fmt.Sprint("i", i))
	}
	caughtUp(t, c)
	li := c.LeaderIndex()
	restarted, wiped := (li+1)%3, (li+2)%3
	if _, err := c.Node(restarted).Store().WriteSnapshot(context.Background(), io.Discard); err != nil {
		t.Fatal(err)
	}
	register(t, c, li, "api", "before-restart")
	c.Restart(restarted)
	c.RestartWiped(wiped)
	for i := range 5 {
		register(t, c, i%3, "api", fmt.Sprint("after-", i))
	}
	caughtUp(t, c)
	leader := c.Leader()
	if got := leader.CompareApplyHashes(context.Background()); got != 2 {
		t.Fatalf("the leader compared its apply hash with %d peers, want 2", got)
	}
	if d := leader.ReplicaDivergences(); d != 0 {
		t.Errorf("leader %s reports %v divergences among replicas that agree:\n%s", leader.Name(), d, leader.RecentLogs())
	}
}

func TestLeaderReportsDivergedReplica(t *testing.T) {
	c := testcluster.New(t, 3)
	for i := range 5 {
		register(t, c, i%3, "api", fmt.Sprint("i", i))
	}
	caughtUp(t, c)
	li := c.LeaderIndex()
	fi := (li + 1) % c.Size()
	follower := c.Name(fi)
	// The follower's state machine applies an entry no leader committed,
	// as one did before raftstore's matchedcommit.go: its registry holds
	// an instance the others never had.
	fsm := c.Node(fi).Store().FSM()
	data, err := proto.Marshal(&pb.Command{Kind: &pb.Command_Register{Register: &pb.Instance{
		Service: "api", Id: "ghost", Address: "127.0.0.1:1", Node: follower,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	fsm.Apply(&raft.Log{Index: fsm.Revision(), Term: 1, Type: raft.LogCommand, Data: data})
	register(t, c, li, "api", "after")
	caughtUp(t, c)

	c.WaitFor(20*time.Second, "the leader to report "+follower+" diverged", func() bool {
		leader := c.Leader()
		leader.CompareApplyHashes(context.Background())
		return leader.ReplicaDivergences() > 0
	})
	leader := c.Leader()
	logs := leader.RecentLogs()
	if !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "replica "+follower+" diverged") || !strings.Contains(logs, "--join") {
		t.Errorf("the leader's log does not report %s diverged and what to do:\n%s", follower, logs)
	}
	for i := range c.Size() {
		if i == fi {
			continue
		}
		if strings.Contains(logs, "replica "+c.Name(i)+" diverged") {
			t.Errorf("leader %s reports %s diverged; only %s did:\n%s", leader.Name(), c.Name(i), follower, logs)
		}
	}
}

// restartFromSnapshotWithoutApplyHash restarts agent i from a Raft
// snapshot of its replica as builds from before apply hashes wrote them,
// without one: its replica then knows no apply hash.
func restartFromSnapshotWithoutApplyHash(t *testing.T, c *testcluster.Cluster, i int) {
	t.Helper()
	if _, err := c.Node(i).Store().WriteSnapshot(context.Background(), io.Discard); err != nil {
		t.Fatal(err)
	}
	c.Stop(i)
	dir := filepath.Join(c.DataDir(i), "raft")
	snaps, err := raft.NewFileSnapshotStore(dir, 2, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	metas, err := snaps.List()
	if err != nil || len(metas) == 0 {
		t.Fatalf("agent %s's raft snapshots: %v, %v", c.Name(i), metas, err)
	}
	meta, rc, err := snaps.Open(metas[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	state, _, err := snapshot.RewriteStateHeader(bufio.NewReader(rc), uint64(meta.Size), func(h *pb.SnapshotHeader) {
		h.ApplyHash, h.ApplyHashKnown = 0, false
	})
	if err != nil {
		t.Fatal(err)
	}
	_, trans := raft.NewInmemTransport("") // Create encodes the configuration's peers with it
	sink, err := snaps.Create(meta.Version, meta.Index, meta.Term, meta.Configuration, meta.ConfigurationIndex, trans)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(sink, state); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if err := os.RemoveAll(filepath.Join(dir, "snapshots", meta.ID)); err != nil {
		t.Fatal(err)
	}
	c.Restart(i)
}

// An agent restored from a snapshot of an older build knows no apply hash
// and would never be compared; once every Raft server applies state
// machine version 7 the leader restarts every replica's hash, and the
// next check compares them all.
func TestLeaderRestartsApplyHashesAReplicaDoesNotKnow(t *testing.T) {
	c := testcluster.New(t, 3)
	for i := range 5 {
		register(t, c, i%3, "api", fmt.Sprint("i", i))
	}
	caughtUp(t, c)
	ui := (c.LeaderIndex() + 1) % c.Size()
	unknown := c.Name(ui)
	restartFromSnapshotWithoutApplyHash(t, c, ui)
	register(t, c, c.LeaderIndex(), "api", "after-restart")
	caughtUp(t, c)
	if c.Node(ui).Store().FSM().ApplyHashChainKnown() {
		t.Fatalf("agent %s, restored from a snapshot without an apply hash, knows its hash", unknown)
	}
	st, err := c.Status(ui).Status(context.Background(), &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.ApplyHashChainKnown {
		t.Errorf("agent %s's Status says it knows its apply hash; its replica does not", unknown)
	}

	// Not every Raft server would apply a restart: none is proposed.
	leader := c.Leader()
	if got := leader.CompareApplyHashesRestarting(context.Background(), false); got != 1 {
		t.Errorf("the leader compared its apply hash with %d peers, want 1: %s knows none", got, unknown)
	}
	register(t, c, c.LeaderIndex(), "api", "after-check")
	caughtUp(t, c)
	if c.Node(ui).Store().FSM().ApplyHashChainKnown() || strings.Contains(leader.RecentLogs(), "apply hashes restarted") {
		t.Fatalf("the leader restarted the apply hashes while not every Raft server applies the restart:\n%s", leader.RecentLogs())
	}

	// Every Raft server applies it.
	c.WaitFor(20*time.Second, "the leader to restart the apply hashes", func() bool {
		leader = c.Leader()
		leader.CompareApplyHashes(context.Background())
		return strings.Contains(leader.RecentLogs(), "apply hashes restarted")
	})
	logs := leader.RecentLogs()
	if !strings.Contains(logs, "level=INFO") || !strings.Contains(logs, "agent "+unknown+" had none") {
		t.Errorf("the leader's log does not say it restarted the apply hashes for %s:\n%s", unknown, logs)
	}
	register(t, c, c.LeaderIndex(), "api", "after-restart-of-hashes")
	caughtUp(t, c)
	if !c.Node(ui).Store().FSM().ApplyHashChainKnown() {
		t.Fatalf("agent %s knows no apply hash after the restart", unknown)
	}
	leader = c.Leader()
	if got := leader.CompareApplyHashes(context.Background()); got != 2 {
		t.Errorf("after the restart the leader compared its apply hash with %d peers, want 2:\n%s", got, leader.RecentLogs())
	}
	if d := leader.ReplicaDivergences(); d != 0 {
		t.Errorf("leader %s reports %v divergences after the restart:\n%s", leader.Name(), d, leader.RecentLogs())
	}
}
