package ctlcmd

import (
	"fmt"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/testcluster"
)

func TestRaftRemovePeer(t *testing.T) {
	t.Setenv(addrEnv, "")
	// The leader would reap a dead agent by itself after dead_node_reap;
	// make that long, so that only the command removes it.
	c := testcluster.New(t, 3, testcluster.WithDeadNodeReap(10*time.Minute))
	leader := c.LeaderIndex()
	var others []int
	for i := range c.Size() {
		if i != leader {
			others = append(others, i)
		}
	}
	via, gone := others[0], others[1]
	c.Kill(gone)
	c.WaitFor(20*time.Second, fmt.Sprintf("the leader sees %s failed", c.Name(gone)), func() bool {
		resp, err := c.Status(leader).Members(testContext(t), &zrpcpb.MembersRequest{})
		if err != nil {
			return false
		}
		for _, m := range resp.Members {
			if m.Name == c.Name(gone) {
				return m.Status == "failed"
			}
		}
		return false
	})
	run := func(args ...string) runResult { return runZrpcctl(testContext(t), t, c.GRPCAddr(via), args...) }
	fails := func(name string, wants ...string) {
		t.Helper()
		res := run("raft", "remove-peer", name)
		if res.err == nil {
			t.Fatalf("remove-peer %s succeeded, want an error", name)
		}
		checkContains(t, "remove-peer "+name+" stderr", res.stderr+res.err.Error(), wants...)
	}
	fails(c.Name(leader), "is the Raft leader and cannot remove itself")
	fails(c.Name(via), "is alive", "leave")
	fails("nosuch", "neither a Raft peer nor a node")

	res := run("raft", "remove-peer", c.Name(gone))
	if res.err != nil {
		t.Fatalf("remove-peer %s: %v\n%s", c.Name(gone), res.err, res.stderr)
	}
	checkContains(t, "remove-peer stdout", res.stdout, "removed agent "+c.Name(gone))
	l := c.Node(leader)
	servers, err := l.Store().Servers()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		if s.ID == c.Name(gone) {
			t.Errorf("%s is still a Raft server", c.Name(gone))
		}
	}
	if l.Store().FSM().Node(c.Name(gone)) != nil {
		t.Errorf("%s is still a node of the registry", c.Name(gone))
	}
	c.WaitFor(10*time.Second, "the follower applied the removal", func() bool {
		return c.Node(via).Store().FSM().Node(c.Name(gone)) == nil
	})
}
