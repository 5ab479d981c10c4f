package node_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
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
