package node_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testport"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/raftstore"
	"github.com/zrpcio/zrpc/testcluster"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// roles returns NAME:ROLE:STATUS of every member as agent i sees them.
func roles(t testing.TB, c *testcluster.Cluster, i int) map[string]string {
	resp, err := c.Status(i).Members(ctxT(t), &pb.MembersRequest{})
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, m := range resp.Members {
		out[m.Name] = m.Role + "/" + m.Status
	}
	return out
}

func countRoles(m map[string]string) (voters, nonvoters int) {
	for _, r := range m {
		switch r {
		case "leader/alive", "voter/alive":
			voters++
		case "nonvoter/alive":
			nonvoters++
		}
	}
	return
}

func TestJoinThreeAndFiveAgents(t *testing.T) {
	for _, tc := range []struct{ agents, voters, nonvoters int }{{3, 3, 0}, {5, 3, 2}} {
		t.Run(fmt.Sprintf("%d agents", tc.agents), func(t *testing.T) {
			c := testcluster.New(t, tc.agents)
			for i := 0; i < tc.agents; i++ {
				c.WaitFor(20*time.Second, fmt.Sprintf("agent %d sees %d voters + %d nonvoters", i, tc.voters, tc.nonvoters), func() bool {
					v, nv := countRoles(roles(t, c, i))
					return v == tc.voters && nv == tc.nonvoters
				})
			}
			// Any agent takes a write; every agent answers the same.
			if _, err := c.Registry(tc.agents-1).Register(ctxT(t), &pb.RegisterRequest{Instance: &pb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9001"}}); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < tc.agents; i++ {
				c.WaitFor(10*time.Second, fmt.Sprintf("agent %d lists user.rpc", i), func() bool {
					resp, err := c.Registry(i).List(ctxT(t), &pb.ListRequest{Consistency: pb.Consistency_STALE})
					return err == nil && len(resp.Services) == 1 && resp.Services[0].Instances == 1
				})
			}
		})
	}
}

func register(t testing.TB, c *testcluster.Cluster, via int, service, id string) *pb.RegisterResponse {
	t.Helper()
	resp, err := c.Registry(via).Register(ctxT(t), &pb.RegisterRequest{Instance: &pb.Instance{Service: service, Id: id, Address: "127.0.0.1:9001"}})
	if err != nil {
		t.Fatalf("register %s/%s via agent %d: %v", service, id, via, err)
	}
	return resp
}

// instances returns agent i's view of service at consistency mode (nil on
// error).
func instances(t testing.TB, c *testcluster.Cluster, i int, service string, mode pb.Consistency) map[string]*pb.Instance {
	resp, err := c.Registry(i).Get(ctxT(t), &pb.GetRequest{Service: service, Consistency: mode})
	if err != nil {
		return nil
	}
	out := map[string]*pb.Instance{}
	for _, in := range resp.Instances {
		out[in.Id] = in
	}
	return out
}

func TestLeaderKilledWritesResumeNothingLost(t *testing.T) {
	c := testcluster.New(t, 3)
	var acked []string
	for i := 0; i < 20; i++ {
		id := fmt.Sprint("before-", i)
		register(t, c, i%3, "user.rpc", id)
		acked = append(acked, id)
	}
	old := c.LeaderIndex()
	c.Kill(old)
	alive := (old + 1) % 3
	// The write waits out the election instead of failing.
	for i := 0; i < 20; i++ {
		id := fmt.Sprint("after-", i)
		register(t, c, alive, "user.rpc", id)
		acked = append(acked, id)
	}
	if l := c.LeaderIndex(); l == old || l < 0 {
		t.Fatalf("leader after kill = %d (killed %d)", l, old)
	}
	got := instances(t, c, alive, "user.rpc", pb.Consistency_CONSISTENT)
	for _, id := range acked {
		if got[id] == nil {
			t.Fatalf("acknowledged registration %s lost (have %d)", id, len(got))
		}
	}
	// The killed agent comes back and catches up.
	c.Restart(old)
	c.WaitFor(20*time.Second, "restarted agent has every registration", func() bool {
		return len(instances(t, c, old, "user.rpc", pb.Consistency_STALE)) == len(acked)
	})
}

func TestMinorityPartitionCannotWriteButReadsStaleThenConverges(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithConfig(func(cfg *node.Config) { cfg.LeaderWait = time.Second }))
	register(t, c, 0, "user.rpc", "u0")
	minority := (c.LeaderIndex() + 1) % 3
	c.WaitFor(10*time.Second, "minority agent has u0", func() bool {
		return len(instances(t, c, minority, "user.rpc", pb.Consistency_STALE)) == 1
	})
	var majority []int
	for i := 0; i < 3; i++ {
		if i != minority {
			majority = append(majority, i)
		}
	}
	c.Partition([]int{minority}, majority)

	// The majority keeps writing.
	c.WaitFor(20*time.Second, "majority accepts a write", func() bool {
		_, err := c.Registry(majority[0]).Register(ctxT(t), &pb.RegisterRequest{Instance: &pb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9001"}})
		return err == nil
	})
	// The minority refuses writes with Unavailable, and says why.
	_, err := c.Registry(minority).Register(ctxT(t), &pb.RegisterRequest{Instance: &pb.Instance{Service: "user.rpc", Id: "lost", Address: "127.0.0.1:9001"}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("write on the minority: %v, want Unavailable", err)
	}
	// Its stale reads still answer (with the old state); default reads
	// refuse once it has been cut off beyond the bound.
	if got := instances(t, c, minority, "user.rpc", pb.Consistency_STALE); got == nil || got["u0"] == nil {
		t.Fatalf("stale read on the minority = %v", got)
	}
	c.WaitFor(10*time.Second, "default read on the minority refuses", func() bool {
		_, err := c.Registry(minority).Get(ctxT(t), &pb.GetRequest{Service: "user.rpc"})
		return status.Code(err) == codes.Unavailable
	})

	c.Heal()
	c.WaitFor(20*time.Second, "every replica converges to the leader's state", func() bool {
		for i := 0; i < 3; i++ {
			got := instances(t, c, i, "user.rpc", pb.Consistency_STALE)
			if len(got) != 2 || got["u0"] == nil || got["u1"] == nil {
				return false
			}
		}
		return true
	})
}

// TestDeadAgentInstancesTurnCriticalThenVanishFromWatchers: watchers on
// the other agents see a killed agent's instances turn critical; after the
// reap, the instance bound to one of its sessions goes, and the one
// registered through it without a session stays, critical, with the reap
// as its output.
func TestDeadAgentInstancesTurnCriticalThenVanishFromWatchers(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithDeadNodeReap(2*time.Second))
	victim := (c.LeaderIndex() + 1) % 3
	registerInSession(t, c, victim, "user.rpc", "on-victim")
	register(t, c, victim, "user.rpc", "static-on-victim")
	var others []int
	for i := 0; i < 3; i++ {
		if i != victim {
			register(t, c, i, "user.rpc", fmt.Sprint("on-", c.Name(i)))
			others = append(others, i)
		}
	}
	// A watcher on every surviving agent (the leader and a follower).
	var streams []<-chan *pb.Event
	for _, i := range others {
		streams = append(streams, watchEvents(t, c, i, "user.rpc"))
	}
	c.Kill(victim)
	for k, seen := range streams {
		var critical, deleted, staticCritical, kept bool
		deadline := time.After(30 * time.Second)
		for !deleted || !kept {
			select {
			case e, ok := <-seen:
				if !ok {
					t.Fatalf("watch on agent %d ended", others[k])
				}
				switch e.Instance.Id {
				case "on-victim":
					critical = critical || (e.Type == pb.Event_PUT && e.Instance.Health == pb.Health_CRITICAL)
					deleted = e.Type == pb.Event_DELETE
				case "static-on-victim":
					if e.Type == pb.Event_DELETE {
						t.Fatalf("watcher on agent %d: the instance registered through the dead agent without a session was removed", others[k])
					}
					staticCritical = staticCritical || e.Instance.Health == pb.Health_CRITICAL
					kept = e.Instance.Health == pb.Health_CRITICAL && strings.HasPrefix(e.Instance.HealthOutput, raftstore.ReapedOutputPrefix+" "+c.Name(victim))
				default:
					if e.Type == pb.Event_DELETE {
						t.Fatalf("instance %s of a live agent was removed", e.Instance.Id)
					}
				}
			case <-deadline:
				t.Fatalf("watcher on agent %d: the dead agent's session-bound instance did not go (critical seen: %v, gone: %v), or its other one was not kept (critical seen: %v, kept: %v)",
					others[k], critical, deleted, staticCritical, kept)
			}
		}
		if !critical {
			t.Fatalf("watcher on agent %d: the dead agent's instance was removed without turning critical first", others[k])
		}
	}
	c.WaitFor(10*time.Second, "dead agent removed from Raft", func() bool {
		servers, err := c.Leader().Store().Servers()
		return err == nil && len(servers) == 2
	})
}

// registerInSession opens a session on agent via (kept open until the
// test ends) and registers service/id in it.
func registerInSession(t *testing.T, c *testcluster.Cluster, via int, service, id string) {
	t.Helper()
	stream, err := c.Registry(via).Session(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.SessionRequest{Seq: 1, Kind: &pb.SessionRequest_Open{Open: &pb.SessionOpen{Owner: "test"}}}); err != nil {
		t.Fatal(err)
	}
	if open, err := stream.Recv(); err != nil || open.Session == "" {
		t.Fatalf("open a session via agent %d: %v, %v", via, open, err)
	}
	if err := stream.Send(&pb.SessionRequest{Seq: 2, Kind: &pb.SessionRequest_Register{
		Register: &pb.RegisterRequest{Instance: &pb.Instance{Service: service, Id: id, Address: "127.0.0.1:9001"}}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := stream.Recv(); err != nil || r.Error != nil {
		t.Fatalf("register %s/%s in a session via agent %d: %v, %v", service, id, via, r, err)
	}
}

// watchEvents streams the events of service as agent i sees them; the
// channel closes when the stream ends.
func watchEvents(t *testing.T, c *testcluster.Cluster, i int, service string) <-chan *pb.Event {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := c.Registry(i).Watch(ctx, &pb.WatchRequest{Service: service})
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan *pb.Event, 1000)
	go func() {
		defer close(seen)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			for _, e := range resp.Events {
				seen <- e
			}
		}
	}()
	return seen
}

func TestVoterLostNonvoterPromoted(t *testing.T) {
	c := testcluster.New(t, 4, testcluster.WithDeadNodeReap(2*time.Second))
	c.WaitFor(20*time.Second, "3 voters + 1 nonvoter", func() bool {
		v, nv := countRoles(roles(t, c, 0))
		return v == 3 && nv == 1
	})
	// Kill a voter that is not the leader.
	leader := c.LeaderIndex()
	victim := -1
	for name, r := range roles(t, c, leader) {
		if r == "voter/alive" {
			for i := 0; i < 4; i++ {
				if c.Name(i) == name {
					victim = i
				}
			}
		}
	}
	if victim < 0 {
		t.Fatal("no follower voter found")
	}
	c.Kill(victim)
	c.WaitFor(30*time.Second, "the nonvoter is promoted and the cluster has 3 voters again", func() bool {
		l := c.LeaderIndex()
		if l < 0 {
			return false // between leaders
		}
		v, nv := countRoles(roles(t, c, l))
		return v == 3 && nv == 0
	})
	register(t, c, leader, "user.rpc", "after-promotion")
}

// TestNonVoterIsNeverPromoted: in a cluster of three voters, an agent set
// non_voter (n2, which gossip lists before n4) stays a nonvoter when a
// voter is lost: n4 takes its place. An agent set non_voter with an
// empty data dir and nothing to join refuses to start a cluster.
func TestNonVoterIsNeverPromoted(t *testing.T) {
	c := testcluster.New(t, 5, testcluster.WithDeadNodeReap(2*time.Second), testcluster.WithConfig(func(cfg *node.Config) {
		if cfg.Name == "n2" {
			cfg.NonVoter = true
		}
	}))
	c.WaitFor(20*time.Second, "3 voters + 2 nonvoters, n2 one of them", func() bool {
		r := roles(t, c, 0)
		v, nv := countRoles(r)
		return v == 3 && nv == 2 && r["n2"] == "nonvoter/alive"
	})
	leader := c.LeaderIndex()
	victim := -1
	for i := range 5 {
		if i != leader && roles(t, c, leader)[c.Name(i)] == "voter/alive" {
			victim = i
			break
		}
	}
	if victim < 0 {
		t.Fatal("no follower voter found")
	}
	c.Kill(victim)
	gone := c.Name(victim)
	c.WaitFor(30*time.Second, gone+" reaped and another agent than n2 promoted: 3 voters again", func() bool {
		l := c.LeaderIndex()
		if l < 0 {
			return false
		}
		r := roles(t, c, l)
		if r["n2"] != "nonvoter/alive" {
			return true // n2 changed: the check below says how
		}
		v, nv := countRoles(r)
		return v == 3 && nv == 1 && !strings.HasPrefix(r[gone], "voter")
	})
	if r := roles(t, c, c.LeaderIndex()); r["n2"] != "nonvoter/alive" {
		t.Fatalf("n2, set non_voter, is %s; want it still a nonvoter (roles %v)", r["n2"], r)
	}

	cfg := node.Default()
	cfg.Name, cfg.DataDir, cfg.BindAddr, cfg.NonVoter = "alone", t.TempDir(), "127.0.0.1", true
	cfg.GRPCPort, cfg.RaftPort, cfg.GossipPort, cfg.HTTPPort, cfg.DNSPort = 0, 0, 0, 0, 0
	n, err := node.New(cfg)
	if err == nil {
		err = n.Start(ctxT(t))
		n.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "non_voter") {
		t.Fatalf("a non_voter agent with nothing to join started: %v; want it refused naming non_voter", err)
	}
}

func TestGracefulLeave(t *testing.T) {
	c := testcluster.New(t, 3)
	leaver := c.LeaderIndex() // the hardest case: the leader leaves
	register(t, c, (leaver+1)%3, "user.rpc", "u0")
	// An instance owned by the leaving agent goes with it.
	register(t, c, leaver, "owned.rpc", "o1")
	resp, err := c.Status(leaver).Leave(ctxT(t), &pb.LeaveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Removed {
		t.Fatal("leave was not confirmed")
	}
	select {
	case <-c.Node(leaver).Left():
	case <-time.After(5 * time.Second):
		t.Fatal("Left() not closed after Leave")
	}
	c.Stop(leaver)
	other := (leaver + 1) % 3
	c.WaitFor(20*time.Second, "two voters, leaver gone, its instances removed, writes work", func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		if servers, err := l.Store().Servers(); err != nil || len(servers) != 2 {
			return false
		}
		return len(instances(t, c, other, "owned.rpc", pb.Consistency_CONSISTENT)) == 0 &&
			len(instances(t, c, other, "user.rpc", pb.Consistency_CONSISTENT)) == 1
	})
	register(t, c, other, "user.rpc", "after-leave")
}

// TestCleanStopReleasesEverything: an agent stopped cleanly starts again on
// the same addresses and data in the same process (no listener or gossip
// transport left behind) with its registrations.
func TestCleanStopReleasesEverything(t *testing.T) {
	c := testcluster.New(t, 1)
	register(t, c, 0, "user.rpc", "u1")
	c.Stop(0)
	c.Restart(0)
	c.WaitFor(20*time.Second, "restarted agent serves its registration", func() bool {
		return instances(t, c, 0, "user.rpc", pb.Consistency_DEFAULT)["u1"] != nil
	})
}

// holdsFor fails the test if cond stops holding before d has passed.
func holdsFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if !cond() {
			t.Fatalf("no longer holds: %s", what)
		}
	}
}

// inRaft reports whether agent name is in the Raft configuration of
// leader l.
func inRaft(l *node.Node, name string) bool {
	servers, err := l.Store().Servers()
	if err != nil {
		return false
	}
	for _, s := range servers {
		if s.ID == name {
			return true
		}
	}
	return false
}

// TestHealedPartitionKeepsTheAgent: an agent cut off for less than
// dead_node_reap and then reachable again rejoins gossip by itself: its
// instances turn passing again and the leader never reaps it.
func TestHealedPartitionKeepsTheAgent(t *testing.T) {
	const reap = 8 * time.Second
	c := testcluster.New(t, 3, testcluster.WithDeadNodeReap(reap))
	leader := c.LeaderIndex()
	cut := (leader + 1) % 3
	register(t, c, cut, "user.rpc", "on-cut")
	var rest []int
	for i := 0; i < 3; i++ {
		if i != cut {
			rest = append(rest, i)
		}
	}
	seen := watchEvents(t, c, leader, "user.rpc")

	c.Partition([]int{cut}, rest)
	cutAt := time.Now()
	// The partition lasts long enough for both sides' gossip to stop
	// trying: 3 s, and at least until the leader has seen the agent fail.
	c.WaitFor(20*time.Second, "the leader marks the cut-off agent's instance critical, 3 s into the partition", func() bool {
		in := instances(t, c, leader, "user.rpc", pb.Consistency_STALE)["on-cut"]
		return in != nil && in.Health == pb.Health_CRITICAL && time.Since(cutAt) > 3*time.Second
	})
	c.Heal()
	healedAt := time.Now()
	c.WaitFor(20*time.Second, "the agent's instance passing again", func() bool {
		in := instances(t, c, leader, "user.rpc", pb.Consistency_STALE)["on-cut"]
		return in != nil && in.Health == pb.Health_PASSING
	})
	// Well past the moment the leader would have reaped it.
	holdsFor(t, time.Until(healedAt.Add(12*time.Second)), "the agent stays in Raft with its instance", func() bool {
		l := c.Leader() // nil during an election: nobody can reap then
		return (l == nil || inRaft(l, c.Name(cut))) && instances(t, c, leader, "user.rpc", pb.Consistency_STALE)["on-cut"] != nil
	})
	for len(seen) > 0 {
		if e := <-seen; e.Type == pb.Event_DELETE {
			t.Fatalf("instance %s of a running agent was deleted", e.Instance.Id)
		}
	}
}

// TestForwardedWriteToASilentLeaderFailsWithinLeaderWait: a leader that
// stops answering without closing its connections (a pulled cable) does
// not hold a follower's forwarded write past leader_wait: the write fails
// with Unavailable instead of hanging until the caller gives up.
func TestForwardedWriteToASilentLeaderFailsWithinLeaderWait(t *testing.T) {
	const leaderWait = time.Second
	c := testcluster.New(t, 3, testcluster.WithConfig(func(cfg *node.Config) {
		cfg.LeaderWait = leaderWait
		// The follower keeps believing in the silent leader for a while,
		// so the write is forwarded to it rather than waiting for an
		// election.
		cfg.RaftHeartbeatTimeout = 5 * time.Second
		cfg.RaftElectionTimeout = 5 * time.Second
		// Nor does the leader step down on a loaded machine's late
		// heartbeats before the write: with 5 s elections the cluster
		// would be without a leader for longer than leader_wait.
		cfg.RaftLeaderLease = 5 * time.Second
	}))
	leader := c.LeaderIndex()
	follower := (leader + 1) % 3
	register(t, c, follower, "user.rpc", "u0") // the follower's connection to the leader is open
	var rest []int
	for i := 0; i < 3; i++ {
		if i != leader {
			rest = append(rest, i)
		}
	}
	c.PartitionSilently([]int{leader}, rest)
	t.Cleanup(c.Heal)

	ctx, cancel := context.WithTimeout(context.Background(), leaderWait+10*time.Second)
	defer cancel()
	_, err := c.Registry(follower).Register(ctx, &pb.RegisterRequest{Instance: &pb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9001"}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("write forwarded to a silent leader: %v, want Unavailable after leader_wait", err)
	}
	// Sent to the leader, which may yet commit it: the outcome is not
	// known, and the error must not say it was not applied.
	if apierr.IsNotApplied(apierr.FromStatus(err)) {
		t.Fatalf("write forwarded to a silent leader: %v, marked not applied", err)
	}
}

// TestLeaveConfirmedByAPeerWhenTheLeaderCannotReachTheLeaver: the leader
// stops replicating to an agent once it has appended the configuration
// that removes it, so the leaving agent may never learn of its removal
// from its own log; another agent's view confirms it. Nor can the
// leaver's direct leave notice reach the leader: its gossip meta, which
// the other agent relays, says it is leaving, so the leader takes it for
// left (its instances go with it), not failed (reaped after
// dead_node_reap, its instances kept, critical).
func TestLeaveConfirmedByAPeerWhenTheLeaderCannotReachTheLeaver(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.LeaderIndex()
	leaver := (leader + 1) % 3
	register(t, c, leaver, "user.rpc", "through-the-leaver")
	c.DropPackets(leader, leaver, 1) // no connection between the two works
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := c.Leave(ctx, leaver, node.LeaveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Removed {
		t.Fatal("leave was not confirmed although the other agents removed the leaver")
	}
	c.WaitFor(20*time.Second, "the leader's configuration without the leaver", func() bool {
		servers, err := c.Node(leader).Store().Servers()
		return err == nil && len(servers) == 2
	})
	c.WaitFor(20*time.Second, "the leaver's instance gone with it, not kept as a failed agent's", func() bool {
		got := instances(t, c, leader, "user.rpc", pb.Consistency_STALE)
		return got != nil && got["through-the-leaver"] == nil
	})
}

// nameResolver resolves every name to the same addresses.
type nameResolver []netip.Addr

func (r nameResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return r, nil
}

// TestAgentsJoiningOneNameBootstrapTogether: three agents started at once,
// each told to join one DNS name that resolves to all of them (a headless
// Kubernetes Service's) and to expect 3 servers, form one cluster of
// three voters.
func TestAgentsJoiningOneNameBootstrapTogether(t *testing.T) {
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	var resolver nameResolver
	for _, ip := range ips {
		resolver = append(resolver, netip.MustParseAddr(ip))
	}
	gossipPort := testport.Free(t, ips...)
	nodes := make([]*node.Node, len(ips))
	for i, ip := range ips {
		cfg := node.Default()
		cfg.Name = fmt.Sprintf("zrpc-%d", i)
		cfg.DataDir = t.TempDir()
		cfg.BindAddr, cfg.HTTPBind = ip, ip
		cfg.GRPCPort, cfg.RaftPort, cfg.HTTPPort, cfg.GossipPort = 0, 0, 0, gossipPort
		cfg.DNSPort = 0
		cfg.GossipProfile = "local"
		cfg.RaftHeartbeatTimeout, cfg.RaftElectionTimeout, cfg.RaftLeaderLease = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
		cfg.JoinMaxBackoff = 500 * time.Millisecond
		cfg.Join = []string{"zrpc.zrpc.svc"}
		cfg.BootstrapExpect = 3
		n, err := node.New(cfg, node.WithLogger(testlog.New(t, cfg.Name)), node.WithJoinResolver(resolver))
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(context.Background()); err != nil {
			t.Fatalf("start %s: %v", cfg.Name, err)
		}
		t.Cleanup(func() { n.Close() })
		nodes[i] = n
	}
	testwait.For(t, 60*time.Second, "one leader with three voters, known to every agent", func() bool {
		var leader *node.Node
		for _, n := range nodes {
			if n.Store().IsLeader() {
				leader = n
			}
		}
		if leader == nil {
			return false
		}
		servers, err := leader.Store().Servers()
		if err != nil || len(servers) != 3 {
			return false
		}
		for _, s := range servers {
			if s.Suffrage != raftstore.Voter {
				return false
			}
		}
		for _, n := range nodes {
			if addr, _ := n.Store().Leader(); addr == "" {
				return false
			}
		}
		return true
	})
}

// TestAgentRestoredFromAnOldCopyLearnsWhatIsCommittedFromItsPeers: an
// agent restarted on an old copy of its data dir, where no leader reaches
// it, asks its peers which index they know committed before it votes
// (raftstore votegate.go): its CommitSeen reaches the cluster's commit
// index without a single AppendEntries from the leader, so it would elect
// no candidate lacking the writes acknowledged since the copy.
func TestAgentRestoredFromAnOldCopyLearnsWhatIsCommittedFromItsPeers(t *testing.T) {
	c := testcluster.New(t, 3)
	l := c.LeaderIndex()
	a := (l + 1) % 3
	register(t, c, l, "user.rpc", "before-the-copy")
	c.Stop(a)
	backup := t.TempDir()
	if err := os.CopyFS(backup, os.DirFS(c.DataDir(a))); err != nil {
		t.Fatal(err)
	}
	c.Restart(a)
	for i := range 20 {
		register(t, c, l, "user.rpc", fmt.Sprintf("after-%d", i))
	}
	committed := c.Node(l).Store().Status().CommitIndex
	c.Stop(a)
	if err := os.RemoveAll(c.DataDir(a)); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(c.DataDir(a), os.DirFS(backup)); err != nil {
		t.Fatal(err)
	}
	c.Partition([]int{l}, []int{a}) // the third agent reaches both
	c.RestartJoining(a)
	if last := c.Node(a).Store().Status().LastLogIndex; last >= committed {
		t.Fatalf("the restored agent's log ends at %d, the cluster's commit index is %d: the test is void", last, committed)
	}
	c.WaitFor(10*time.Second, "the restored agent to know what its peers know committed", func() bool {
		return c.Node(a).Store().Status().CommitSeen >= committed
	})
}

// TestAnAgentWithoutTheLogIsNotMadeAVoter: an agent that joins with a Raft
// log refusing writes (a full disk) cannot receive the cluster's log. Made
// a voter at once, it would refuse its vote to every candidate until a
// leader sent it the log, so once the only other voter stopped leading
// (here: restarted), no leader could ever be elected. It stays a nonvoter
// until it has the log, the first agent leads again after its restart,
// and the second becomes a voter once its disk takes writes.
func TestAnAgentWithoutTheLogIsNotMadeAVoter(t *testing.T) {
	c := testcluster.New(t, 1)
	i := c.Add(testcluster.WithFailingRaftDisk("n2"))
	suffrage := func() (raftstore.Suffrage, bool) {
		l := c.Leader()
		if l == nil {
			return 0, false
		}
		servers, err := l.Store().Servers()
		if err != nil {
			return 0, false
		}
		for _, s := range servers {
			if s.ID == "n2" {
				return s.Suffrage, true
			}
		}
		return 0, false
	}
	c.WaitFor(20*time.Second, "n2 in the Raft configuration", func() bool { _, ok := suffrage(); return ok })
	time.Sleep(2 * time.Second) // two reconcile passes, and gossip updates, at least
	if s, ok := suffrage(); !ok || s != raftstore.Nonvoter {
		t.Fatalf("n2, which has not received the log, is %v (in Raft: %v), want a nonvoter", s, ok)
	}
	c.Restart(0)
	c.WaitFor(20*time.Second, "n1 to lead again after its restart", func() bool { return c.Leader() != nil })
	c.FailDisk(i, false)
	c.WaitFor(30*time.Second, "n2 a voter once its disk takes writes", func() bool {
		s, ok := suffrage()
		return ok && s == raftstore.Voter
	})
}
