package node_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// TestAgentReportsUnreachableVotersAndFailsWritesWithoutAQuorum: with one
// of three voters down, Status and /metrics name it and writes go on;
// with two down, Status shows no leader, /metrics has no leader and two
// voters unreachable, /readyz says why it is not ready, and a write fails
// with ErrNoLeader saying how many voters are reachable, before the
// caller's deadline.
func TestAgentReportsUnreachableVotersAndFailsWritesWithoutAQuorum(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithDeadNodeReap(time.Hour))
	c.WaitFor(20*time.Second, "a leader", func() bool { return c.Leader() != nil })
	survivor := c.LeaderIndex()
	f1, f2 := followers(t, c)
	status := func() *pb.StatusResponse {
		st, err := c.Status(survivor).Status(ctxT(t), &pb.StatusRequest{})
		if err != nil {
			return nil
		}
		return st
	}
	c.WaitFor(20*time.Second, "three voters, all reachable", func() bool {
		st := status()
		return st != nil && st.Voters == 3 && st.ReachableVoters == 3 && len(st.UnreachableVoters) == 0
	})
	metrics := func(want ...string) bool {
		resp, err := http.Get("http://" + c.Node(survivor).HTTPAddr() + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, w := range want {
			if !strings.Contains(string(body), "\n"+w+"\n") {
				return false
			}
		}
		return true
	}
	c.WaitFor(10*time.Second, "/metrics: a leader, three voters, none unreachable", func() bool {
		return metrics("zrpc_raft_has_leader 1", "zrpc_raft_voters 3", "zrpc_raft_voters_unreachable 0")
	})

	c.Kill(f1)
	c.WaitFor(20*time.Second, c.Name(f1)+" shown unreachable", func() bool {
		st := status()
		if st == nil || st.ReachableVoters != 2 || len(st.UnreachableVoters) != 1 {
			return false
		}
		u := st.UnreachableVoters[0]
		return u.Name == c.Name(f1) && u.Status == "failed" && u.DownFor != nil && st.Leader != ""
	})
	c.WaitFor(10*time.Second, "/metrics: one voter unreachable", func() bool {
		return metrics("zrpc_raft_has_leader 1", "zrpc_raft_voters 3", "zrpc_raft_voters_unreachable 1", "zrpc_raft_cut_off 0")
	})
	if _, err := c.Registry(survivor).Register(ctxT(t), &pb.RegisterRequest{Instance: &pb.Instance{Service: "api", Id: "a1", Address: "127.0.0.1:9001"}}); err != nil {
		t.Fatalf("write with two of three voters: %v", err)
	}

	c.Kill(f2)
	c.WaitFor(20*time.Second, "no leader and one voter reachable", func() bool {
		st := status()
		return st != nil && st.Leader == "" && st.ReachableVoters == 1 && len(st.UnreachableVoters) == 2
	})
	c.WaitFor(10*time.Second, "/metrics: no leader, two voters unreachable, cut off", func() bool {
		return metrics("zrpc_raft_has_leader 0", "zrpc_raft_voters 3", "zrpc_raft_voters_unreachable 2", "zrpc_raft_cut_off 1")
	})
	resp, err := http.Get("http://" + c.Node(survivor).HTTPAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "no Raft leader known (1 of 3 voters reachable") {
		t.Errorf("/readyz without a quorum = %d %q, want 503 saying how many voters are reachable", resp.StatusCode, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = c.Registry(survivor).Register(ctx, &pb.RegisterRequest{Instance: &pb.Instance{Service: "api", Id: "a2", Address: "127.0.0.1:9002"}})
	if err := apierr.FromStatus(err); !errors.Is(err, apierr.ErrNoLeader) || !strings.Contains(err.Error(), "1 of 3 voters reachable") {
		t.Fatalf("write without a quorum = %v, want ErrNoLeader saying 1 of 3 voters are reachable", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the write without a quorum was answered only at the caller's deadline")
	}
}

// TestWipedVoterIsNamedAndElectsNoOne: the leader and a follower die; the
// follower comes back with an empty data dir (a replaced disk) under its
// name. It refuses its vote to the survivor (raftstore/votegate.go), so
// there is no leader; the survivor's Status names it as a voter without
// Raft state, and a write fails with ErrNoLeader saying so. Once the old
// leader is back the cluster elects, the wiped agent receives the log,
// and every voter counts as reachable again.
func TestWipedVoterIsNamedAndElectsNoOne(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithDeadNodeReap(time.Hour))
	leader := c.LeaderIndex()
	if _, err := c.Registry(leader).Register(ctxT(t), &pb.RegisterRequest{Instance: &pb.Instance{Service: "api", Id: "kept", Address: "127.0.0.1:9001"}}); err != nil {
		t.Fatal(err)
	}
	wiped, survivor := followers(t, c)
	c.Kill(leader)
	c.Kill(wiped)
	c.RestartWiped(wiped)
	c.WaitFor(30*time.Second, c.Name(wiped)+" named as a voter without Raft state", func() bool {
		st, err := c.Status(survivor).Status(ctxT(t), &pb.StatusRequest{})
		if err != nil || st.Leader != "" || st.ReachableVoters != 1 {
			return false
		}
		for _, u := range st.UnreachableVoters {
			if u.Name == c.Name(wiped) && u.Status == node.NoRaftState {
				return true
			}
		}
		return false
	})
	members, err := c.Status(survivor).Members(ctxT(t), &pb.MembersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members.Members {
		if got, want := m.NoRaftState, m.Name == c.Name(wiped); got != want {
			t.Errorf("member %s (%s): no_raft_state %v, want %v", m.Name, m.Status, got, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = c.Registry(survivor).Register(ctx, &pb.RegisterRequest{Instance: &pb.Instance{Service: "api", Id: "lost", Address: "127.0.0.1:9002"}})
	if err := apierr.FromStatus(err); !errors.Is(err, apierr.ErrNoLeader) || !strings.Contains(err.Error(), c.Name(wiped)+" "+node.NoRaftState) {
		t.Fatalf("write with the leader down and a wiped voter = %v, want ErrNoLeader naming %s as without Raft state", err, c.Name(wiped))
	}
	if l := c.Leader(); l != nil {
		t.Fatalf("%s leads with only a wiped voter beside it", l.Name())
	}

	c.Restart(leader)
	c.WaitFor(30*time.Second, "a leader, and every voter reachable", func() bool {
		st, err := c.Status(survivor).Status(ctxT(t), &pb.StatusRequest{})
		return err == nil && st.Leader != "" && st.ReachableVoters == 3
	})
	c.WaitFor(20*time.Second, c.Name(wiped)+" has the instance written before its disk was replaced", func() bool {
		return c.Node(wiped).Store().FSM().Instance("api", "kept") != nil
	})
}

// TestRecoverAfterLosingAMajority: two of three agents are lost for good.
// The survivor cannot lead alone; `zrpcd agent recover` (node.Recover) on
// its stopped data dir makes it the only voter, keeping its registry, and
// it leads at once when started. Agents started with empty data dirs
// join it and receive what it kept. A dry run changes nothing.
func TestRecoverAfterLosingAMajority(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithDeadNodeReap(time.Hour))
	leader := c.LeaderIndex()
	if _, err := c.Registry(leader).Register(ctxT(t), &pb.RegisterRequest{Instance: &pb.Instance{Service: "api", Id: "kept", Address: "127.0.0.1:9001"}}); err != nil {
		t.Fatal(err)
	}
	survivor, lost := followers(t, c)
	c.WaitFor(10*time.Second, "the survivor has the instance", func() bool {
		return c.Node(survivor).Store().FSM().Instance("api", "kept") != nil
	})
	c.Kill(leader)
	c.Kill(lost)
	c.Stop(survivor)

	for range 2 { // a dry run reports, and leaves the state as it was
		rep, err := c.Recover(survivor, true)
		if err != nil {
			t.Fatalf("recover --dry-run: %v", err)
		}
		if len(rep.Previous) != 3 || rep.LastIndex == 0 || rep.Revision != 0 {
			t.Fatalf("recover --dry-run: %+v, want the three voters, the last index, no replay", rep)
		}
	}
	rep, err := c.Recover(survivor, false)
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	if len(rep.Previous) != 3 || rep.Instances != 1 || rep.Revision < rep.LastIndex-1 {
		t.Fatalf("recover: %+v, want three voters before and the one instance kept", rep)
	}
	if rep.ClusterID == "" || rep.PreviousClusterID == "" || rep.ClusterID == rep.PreviousClusterID {
		t.Fatalf("recover: cluster id %q, before %q: want a new one", rep.ClusterID, rep.PreviousClusterID)
	}
	c.Restart(survivor)
	c.WaitFor(20*time.Second, c.Name(survivor)+" leads, the only voter, under the new cluster id", func() bool {
		st, err := c.Status(survivor).Status(ctxT(t), &pb.StatusRequest{})
		return err == nil && st.Leader == c.Name(survivor) && st.Voters == 1 && st.ClusterId == rep.ClusterID
	})
	if _, err := c.Registry(survivor).Register(ctxT(t), &pb.RegisterRequest{Instance: &pb.Instance{Service: "api", Id: "after", Address: "127.0.0.1:9002"}}); err != nil {
		t.Fatalf("write after the recovery: %v", err)
	}
	c.RestartWiped(leader)
	c.RestartWiped(lost)
	c.WaitFor(30*time.Second, "three voters again, each with both instances", func() bool {
		st, err := c.Status(survivor).Status(ctxT(t), &pb.StatusRequest{})
		if err != nil || st.Voters != 3 || st.ReachableVoters != 3 {
			return false
		}
		for _, i := range []int{leader, lost} {
			fsm := c.Node(i).Store().FSM()
			if fsm.Instance("api", "kept") == nil || fsm.Instance("api", "after") == nil {
				return false
			}
		}
		return true
	})
}

// TestRecoveredClusterRefusesAgentsWithStateFromBefore: the majority given
// up for lost went on without the survivor (a leader of its own, a write
// the survivor never saw) before it stopped, so its log holds entries of
// the index and term the recovered survivor goes on to use, with other
// contents. Recovery gives the cluster a new id: when one of those agents
// comes back with its data dir and --join, both sides refuse each other
// and say why (zrpc_gossip_refused_total), it is never made a voter, and
// neither replica takes the other's writes. Taken back, it would keep
// its divergent entries as a voter of the recovered cluster.
func TestRecoveredClusterRefusesAgentsWithStateFromBefore(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithDeadNodeReap(time.Hour))
	first := c.LeaderIndex()
	register := func(i int, id string) {
		t.Helper()
		if _, err := c.Registry(i).Register(ctxT(t), &pb.RegisterRequest{Instance: &pb.Instance{Service: "api", Id: id, Address: "127.0.0.1:9001"}}); err != nil {
			t.Fatalf("register %s through %s: %v", id, c.Name(i), err)
		}
	}
	register(first, "before")
	c.WaitFor(10*time.Second, "every agent has the first instance", func() bool {
		for i := range c.Size() {
			if c.Node(i).Store().FSM().Instance("api", "before") == nil {
				return false
			}
		}
		return true
	})
	a, b := followers(t, c)
	c.Kill(first)
	c.WaitFor(20*time.Second, "the other two elect a leader", func() bool {
		i := c.LeaderIndex()
		return i == a || i == b
	})
	register(c.LeaderIndex(), "majority-only")
	c.Kill(a)
	c.Kill(b)

	rep, err := c.Recover(first, false)
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	c.Restart(first)
	c.WaitFor(20*time.Second, c.Name(first)+" leads alone", func() bool {
		st, err := c.Status(first).Status(ctxT(t), &pb.StatusRequest{})
		return err == nil && st.Leader == c.Name(first) && st.Voters == 1 && st.ClusterId == rep.ClusterID
	})
	register(first, "after")

	c.RestartJoining(a)
	refused := func(i int, reason string) bool {
		resp, err := http.Get("http://" + c.Node(i).HTTPAddr() + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for line := range strings.Lines(string(body)) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), `zrpc_gossip_refused_total{reason="`+reason+`"} `); ok && v != "0" {
				return true
			}
		}
		return false
	}
	c.WaitFor(20*time.Second, "each side refuses the other", func() bool {
		return refused(first, "state_before_recovery") && refused(a, "recovered_elsewhere")
	})
	register(first, "after-return")
	st, err := c.Status(first).Status(ctxT(t), &pb.StatusRequest{})
	if err != nil || st.Voters != 1 {
		t.Fatalf("status of %s after %s came back: %v, %v; want it the only voter", c.Name(first), c.Name(a), st, err)
	}
	fsm := c.Node(first).Store().FSM()
	if fsm.Instance("api", "majority-only") != nil || fsm.Instance("api", "after") == nil || fsm.Instance("api", "after-return") == nil {
		t.Fatalf("%s's registry took writes of the agents given up for lost, or lost its own", c.Name(first))
	}
	if c.Node(a).Store().FSM().Instance("api", "after") != nil {
		t.Fatalf("%s, with state from before the recovery, took the recovered cluster's writes", c.Name(a))
	}
}

// TestAgentStoppedWhileJoiningRejoinsInsteadOfFoundingACluster: an agent
// that joined the cluster's gossip but was stopped before it received the
// log (the cluster had no leader to send it) has no Raft state; started
// again without --join, it must not bootstrap a cluster of its own (it
// then led alone, under another cluster id, for good) but rejoin through
// the peers it remembers, and get the log once the cluster has a leader.
func TestAgentStoppedWhileJoiningRejoinsInsteadOfFoundingACluster(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithDeadNodeReap(time.Hour))
	cluster := c.Node(0).Store().FSM().ClusterID()
	survivor, down := followers(t, c)
	leader := c.LeaderIndex()
	c.Kill(leader)
	c.Kill(down)
	joiner := c.Add()
	c.WaitFor(20*time.Second, "the new agent remembers the survivor, its peer in gossip", func() bool {
		_, err := os.Stat(filepath.Join(c.DataDir(joiner), "peers.json"))
		return err == nil
	})
	if st, err := c.Status(joiner).Status(ctxT(t), &pb.StatusRequest{}); err != nil || st.LastLogIndex != 0 {
		t.Fatalf("the new agent has Raft state before any leader could send it (%v, %v): the test is void", st, err)
	}
	c.Stop(joiner)
	c.Restart(joiner) // without --join: from what its data dir remembers
	c.Restart(leader)
	c.Restart(down)
	c.WaitFor(30*time.Second, "the new agent has the cluster's log and id", func() bool {
		n := c.Node(joiner)
		return n.Store().FSM().ClusterID() == cluster && n.Store().FSM().Revision() > 0
	})
	if got := c.Node(survivor).Store().FSM().ClusterID(); got != cluster {
		t.Fatalf("the survivor's cluster id changed: %s, want %s", got, cluster)
	}
}
