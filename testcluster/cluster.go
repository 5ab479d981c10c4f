// Package testcluster starts clusters of zrpc agents inside one test
// process, on loopback with ephemeral ports and short timers, and injects
// faults: Kill (a crash: no goodbye), Restart (same data dir and
// addresses), Partition, PartitionSilently (traffic stops but no
// connection is closed) and Heal. Every connection between agents — Raft,
// gossip, gRPC forwarding — goes through one fault network, so a partition
// cuts all three. Agents log to t.Log, prefixed with their names, so a
// failing test shows what the cluster did.
//
// testcluster is for tests of this repository and of programs built on it;
// it is not a way to run production agents.
package testcluster

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testport"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/raftstore"
)

// Option changes the agents' configuration, or how they run.
type Option func(*agentSetup)

// agentSetup is what the options set for one agent slot.
type agentSetup struct {
	cfg *node.Config
	// clockOffset is how far its wall clock runs ahead of the machine's.
	clockOffset time.Duration
	// failDisk: its Raft log refuses writes from its first start
	// (WithFailingRaftDisk).
	failDisk bool
}

// WithVoters sets how many Raft voters the cluster keeps.
func WithVoters(n int) Option { return WithConfig(func(c *node.Config) { c.Voters = n }) }

// WithDeadNodeReap sets how long a failed agent stays before removal.
func WithDeadNodeReap(d time.Duration) Option {
	return WithConfig(func(c *node.Config) { c.DeadNodeReap = d })
}

// WithInstanceMetadataLimit sets max_instance_metadata_bytes, the most
// bytes of version, tags and metadata one instance may carry.
func WithInstanceMetadataLimit(n int) Option {
	return WithConfig(func(c *node.Config) { c.MaxInstanceMetadataBytes = n })
}

// WithConfig applies f to every agent's configuration.
func WithConfig(f func(*node.Config)) Option { return func(s *agentSetup) { f(s.cfg) } }

// WithFailingRaftDisk makes the Raft log of the agent named name refuse
// every write from its first start, as FailDisk does later (FailDisk
// ends it): an agent that joins with a failing disk.
func WithFailingRaftDisk(name string) Option {
	return func(s *agentSetup) {
		if s.cfg.Name == name {
			s.failDisk = true
		}
	}
}

// WithClockOffset runs the wall clock of the agent named name (node.WithClock)
// d ahead of the machine's, behind when d is negative, as on a machine
// whose clock is off: the same offset for the agent's whole life,
// restarts included, so durations measured on it are the machine's. The
// wall-clock times the agent stamps and compares with other agents'
// (commands, put leases, TTLs, gossip's clock offsets) are on it.
func WithClockOffset(name string, d time.Duration) Option {
	return func(s *agentSetup) {
		if s.cfg.Name == name {
			s.clockOffset = d
		}
	}
}

// Cluster is a set of agents in this process.
type Cluster struct {
	t    testing.TB
	net  *network
	disk diskFaults // slow, failing and full disks, unreadable shards (faults.go)

	mu      sync.Mutex // guards members: Add appends while others read
	members []*member
}

// member is one agent slot; its addresses survive restarts.
type member struct {
	name        string
	cfg         node.Config
	clockOffset time.Duration // WithClockOffset

	mu                   sync.Mutex // guards the fields below
	grpcPort, gossipPort int
	raftPort             int
	node                 *node.Node
	conn                 *grpc.ClientConn
}

// ports returns m's gRPC, Raft and gossip ports (0 before the first start).
func (m *member) ports() (grpcPort, raftPort, gossipPort int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.grpcPort, m.raftPort, m.gossipPort
}

// New starts n agents: the first bootstraps, the others join it. It returns
// once all n are Raft members and a leader is known.
func New(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t, net: newNetwork()}
	for i := 0; i < n; i++ {
		c.members = append(c.members, c.newMember(i, opts))
	}
	t.Cleanup(c.close)
	for i, m := range c.all() {
		if i > 0 {
			m.cfg.Join = []string{c.gossipAddr(0)}
		}
		c.start(i)
	}
	// A joining agent is a nonvoter until it has the log; then the leader
	// promotes it, up to the cluster's number of voters.
	voters := min(n, c.member(0).cfg.Voters)
	c.WaitFor(30*time.Second, fmt.Sprintf("%d agents in Raft, %d of them voters, with a leader", n, voters), func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		servers, err := l.Store().Servers()
		if err != nil || len(servers) != n {
			return false
		}
		got := 0
		for _, s := range servers {
			if s.Suffrage == raftstore.Voter {
				got++
			}
		}
		return got == voters
	})
	// Every agent has then applied what the leader had, the cluster's
	// identity and secret included: it is a full member (it can call and
	// serve the agent-to-agent API), not one still catching up.
	var rev uint64
	c.WaitFor(30*time.Second, "the leader to record the cluster's identity", func() bool {
		l := c.Leader()
		if l == nil || l.Store().FSM().ClusterSecret() == nil {
			return false
		}
		rev = l.Store().FSM().Revision()
		return true
	})
	c.WaitFor(30*time.Second, fmt.Sprintf("every agent at revision %d or later, with the cluster's secret", rev), func() bool {
		for i := range n {
			if fsm := c.Node(i).Store().FSM(); fsm.Revision() < rev || fsm.ClusterSecret() == nil {
				return false
			}
		}
		return true
	})
	return c
}

func (c *Cluster) newMember(i int, opts []Option) *member {
	m := &member{name: fmt.Sprintf("n%d", i+1)}
	cfg := node.Default()
	cfg.Name = m.name
	cfg.DataDir = c.t.TempDir()
	cfg.BindAddr = "127.0.0.1"
	cfg.HTTPPort = 0
	cfg.DNSPort = 0 // off: WithConfig turns it on (many agents share the machine)
	cfg.GossipProfile = "local"
	cfg.RaftHeartbeatTimeout = 200 * time.Millisecond
	cfg.RaftElectionTimeout = 200 * time.Millisecond
	cfg.RaftLeaderLease = 200 * time.Millisecond
	cfg.HealthInterval = 20 * time.Millisecond
	cfg.DeadNodeReap = 3 * time.Second
	cfg.LeaderWait = 5 * time.Second
	cfg.StaleReadBound = 2 * time.Second
	cfg.JoinMaxBackoff = time.Second
	setup := agentSetup{cfg: &cfg}
	for _, o := range opts {
		o(&setup)
	}
	// Ports are chosen at the first start (below the ephemeral range,
	// testport) and kept for restarts.
	m.cfg, m.clockOffset = cfg, setup.clockOffset
	if setup.failDisk {
		c.disk.setFault(m.name, raftFailing, true)
	}
	return m
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

func (c *Cluster) gossipAddr(i int) string {
	_, _, gossip := c.member(i).ports()
	return addr(gossip)
}

// member returns agent slot i.
func (c *Cluster) member(i int) *member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i]
}

// all returns the agent slots there are now.
func (c *Cluster) all() []*member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*member(nil), c.members...)
}

// start starts agent i on its fixed addresses.
func (c *Cluster) start(i int) {
	c.t.Helper()
	m := c.member(i)
	grpcPort, raftPort, gossipPort := m.ports()
	if grpcPort == 0 {
		// Ports below the kernel's ephemeral range: a restart binds them
		// again, and the ephemeral ports of outgoing connections (this
		// process makes thousands) could hold one of those meanwhile.
		for grpcPort == raftPort || grpcPort == gossipPort || raftPort == gossipPort {
			grpcPort, raftPort, gossipPort = testport.Free(c.t), testport.Free(c.t), testport.Free(c.t)
		}
	}
	raftLn, err := net.Listen("tcp", addr(raftPort))
	if err != nil {
		c.t.Fatalf("%s: listen for raft: %v", m.name, err)
	}
	grpcLn, err := net.Listen("tcp", addr(grpcPort))
	if err != nil {
		raftLn.Close()
		c.t.Fatalf("%s: listen for gRPC: %v", m.name, err)
	}
	inner, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: gossipPort})
	if err != nil {
		raftLn.Close()
		grpcLn.Close()
		c.t.Fatalf("%s: gossip transport: %v", m.name, err)
	}
	grpcPort = grpcLn.Addr().(*net.TCPAddr).Port
	raftPort = raftLn.Addr().(*net.TCPAddr).Port
	gossipPort = inner.GetAutoBindPort()
	m.mu.Lock()
	m.grpcPort, m.raftPort, m.gossipPort = grpcPort, raftPort, gossipPort
	m.mu.Unlock()
	m.cfg.GRPCPort, m.cfg.RaftPort, m.cfg.GossipPort = grpcPort, raftPort, gossipPort
	c.net.register(m.name, addr(grpcPort), addr(raftPort), addr(gossipPort))
	dial := c.net.dialer(m.name)
	opts := []node.Option{
		node.WithLogger(testlog.New(c.t, m.name)),
		node.WithRaftStreamLayer(&raftLayer{Listener: raftLn, dial: dial}),
		node.WithGRPCListener(grpcLn),
		node.WithDialer(dial),
		node.WithGossipTransport(newGossipTransport(c.net, m.name, inner)),
		node.WithRaftLogStore(c.disk.wrapLog(m.name)),
		node.WithShardSyncDelay(c.disk.shardSyncDelay(m.name)),
		node.WithShardWriteFault(c.disk.shardWriteFault(m.name)),
		node.WithShardReadFault(c.disk.shardReadFault(m.name)),
	}
	if off := m.clockOffset; off != 0 {
		opts = append(opts, node.WithClock(func() time.Time { return time.Now().Add(off) }))
	}
	n, err := node.New(m.cfg, opts...)
	if err != nil {
		c.t.Fatalf("%s: %v", m.name, err)
	}
	if err := n.Start(context.Background()); err != nil {
		c.t.Fatalf("%s: start: %v", m.name, err)
	}
	m.mu.Lock()
	m.node = n
	m.mu.Unlock()
}

// Size is the number of agent slots.
func (c *Cluster) Size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.members)
}

// Node returns agent i, or nil while it is killed.
func (c *Cluster) Node(i int) *node.Node {
	m := c.member(i)
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.node
}

// DataDir is agent i's data dir.
func (c *Cluster) DataDir(i int) string { return c.member(i).cfg.DataDir }

// Name is agent i's name ("n1" for i = 0).
func (c *Cluster) Name(i int) string { return c.member(i).name }

// GRPCAddr is agent i's API address; it stays the same across restarts.
func (c *Cluster) GRPCAddr(i int) string {
	grpcPort, _, _ := c.member(i).ports()
	return addr(grpcPort)
}

// GossipAddr is agent i's gossip address.
func (c *Cluster) GossipAddr(i int) string { return c.gossipAddr(i) }

// Registry returns a Registry client of agent i. Clients are not part of
// the fault network: a partition cuts agents from each other, not a test
// from an agent.
func (c *Cluster) Registry(i int) pb.RegistryClient {
	return pb.NewRegistryClient(c.conn(i))
}

// Status returns a Status client of agent i.
func (c *Cluster) Status(i int) pb.StatusClient { return pb.NewStatusClient(c.conn(i)) }

func (c *Cluster) conn(i int) *grpc.ClientConn {
	m := c.member(i)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn == nil {
		conn, err := grpc.NewClient(addr(m.grpcPort), c.transport(m))
		if err != nil {
			c.t.Fatalf("dial %s: %v", m.name, err)
		}
		m.conn = conn
	}
	return m.conn
}

// AgentConn returns agent from's connection to agent to's gRPC API: calls
// of the agent-only services (Internal, Shards) on it are made as agent
// from, with its proof of membership. Owned by the agent: do not close it.
func (c *Cluster) AgentConn(from, to int) *grpc.ClientConn {
	c.t.Helper()
	// An agent knows a peer's gRPC address once the leader's record of
	// the peer has reached its replica, which New does not wait for.
	var conn *grpc.ClientConn
	var err error
	testwait.ForExplained(c.t, 10*time.Second, fmt.Sprintf("a connection of %s to %s", c.Name(from), c.Name(to)), func() bool {
		conn, err = c.Node(from).PeerConn(c.Name(to))
		return err == nil
	}, func() string { return fmt.Sprintf(": %v", err) })
	return conn
}

// Kill stops agent i as a crash would: no leadership transfer, no gossip
// goodbye, no session cleanup.
func (c *Cluster) Kill(i int) {
	if n := c.take(i); n != nil {
		n.Halt()
	}
}

// take removes agent i from its slot and returns it (nil if not running).
func (c *Cluster) take(i int) *node.Node {
	m := c.member(i)
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.node
	m.node = nil
	return n
}

// Stop shuts agent i down cleanly (it stays a cluster member).
func (c *Cluster) Stop(i int) {
	if n := c.take(i); n != nil {
		n.Close()
	}
}

// Restart starts a killed or stopped agent again on the same data dir and
// addresses; it rejoins from what its data dir remembers.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.Node(i) != nil {
		c.Kill(i)
	}
	c.member(i).cfg.Join = nil
	c.start(i)
}

// RestartJoining starts a killed or stopped agent again on the same data
// dir and addresses, joining through the gossip addresses of the agents
// running then, as an agent configured with --join comes back.
func (c *Cluster) RestartJoining(i int) {
	c.t.Helper()
	if c.Node(i) != nil {
		c.Kill(i)
	}
	c.member(i).cfg.Join = c.runningGossipAddrs(i)
	c.start(i)
}

// RestartWiped starts a killed or stopped agent again at the same
// addresses and under the same name with an empty data dir, as an agent
// whose disk was replaced comes back; it joins through the gossip
// addresses of the agents running then.
func (c *Cluster) RestartWiped(i int) {
	c.t.Helper()
	if c.Node(i) != nil {
		c.Kill(i)
	}
	m := c.member(i)
	m.cfg.DataDir = c.t.TempDir()
	m.cfg.Join = c.runningGossipAddrs(i)
	c.start(i)
}

// Recover runs outage recovery (node.Recover) on stopped agent i's data
// dir: it becomes the only voter of its cluster when started again.
func (c *Cluster) Recover(i int, dryRun bool) (node.RecoverReport, error) {
	c.t.Helper()
	if c.Node(i) != nil {
		c.t.Fatalf("%s: recover runs on a stopped agent", c.Name(i))
	}
	m := c.member(i)
	rep, _, err := node.Recover(m.cfg, dryRun, testlog.New(c.t, m.name))
	return rep, err
}

// runningGossipAddrs lists the gossip addresses of the running agents but
// agent i: what a restarted agent joins through.
func (c *Cluster) runningGossipAddrs(i int) []string {
	var out []string
	for j := range c.Size() {
		if j != i && c.Node(j) != nil {
			out = append(out, c.gossipAddr(j))
		}
	}
	return out
}

// RestartMoved starts a killed or stopped agent again on the same data dir
// but at new addresses, as a Kubernetes pod comes back with a new IP; it
// joins through the gossip addresses of the agents running then.
func (c *Cluster) RestartMoved(i int) {
	c.t.Helper()
	if c.Node(i) != nil {
		c.Kill(i)
	}
	m := c.member(i)
	m.mu.Lock()
	if m.conn != nil {
		m.conn.Close()
		m.conn = nil
	}
	m.grpcPort, m.raftPort, m.gossipPort = 0, 0, 0
	m.mu.Unlock()
	m.cfg.Join = c.runningGossipAddrs(i)
	c.start(i)
}

// Add starts one more agent that joins through agent 0 (or any alive one).
func (c *Cluster) Add(opts ...Option) int {
	c.t.Helper()
	c.mu.Lock()
	i := len(c.members)
	m := c.newMember(i, opts)
	c.members = append(c.members, m)
	c.mu.Unlock()
	for j := 0; j < i; j++ {
		if c.Node(j) != nil {
			m.cfg.Join = append(m.cfg.Join, c.gossipAddr(j))
		}
	}
	c.start(i)
	return i
}

// Partition splits the agents into groups of indexes; agents in different
// groups cannot reach each other. Agents in no group stay reachable from
// all.
func (c *Cluster) Partition(groups ...[]int) {
	named := c.names(groups)
	c.t.Logf("testcluster: partition %v", named)
	c.net.partition(named, false)
}

// PartitionSilently splits the agents like Partition, but as a pulled
// cable or a dropping firewall would: no connection is closed or refused.
// Traffic across groups just stops: gossip packets are lost, dials and
// writes hang, bytes in flight are held, until Heal (when held traffic
// flows again), a connection's deadline, or its owner's timeout. Agents
// notice only by their own timeouts and keepalives.
func (c *Cluster) PartitionSilently(groups ...[]int) {
	named := c.names(groups)
	c.t.Logf("testcluster: silent partition %v", named)
	c.net.partition(named, true)
}

func (c *Cluster) names(groups [][]int) [][]string {
	var named [][]string
	for _, g := range groups {
		var names []string
		for _, i := range g {
			names = append(names, c.Name(i))
		}
		named = append(named, names)
	}
	return named
}

// Heal ends every partition.
func (c *Cluster) Heal() {
	c.t.Logf("testcluster: heal")
	c.net.heal()
}

// Leader returns the agent that is Raft leader now, or nil.
func (c *Cluster) Leader() *node.Node {
	for i := range c.Size() {
		if n := c.Node(i); n != nil && n.Store().IsLeader() {
			return n
		}
	}
	return nil
}

// LeaderIndex returns the index of the leader. While no running agent
// leads (an election, on a loaded machine even right after New) it waits
// up to leaderWait for one, and returns -1 if none has come.
func (c *Cluster) LeaderIndex() int {
	deadline := time.Now().Add(leaderWait)
	for {
		for i := range c.Size() {
			if n := c.Node(i); n != nil && n.Store().IsLeader() {
				return i
			}
		}
		if time.Now().After(deadline) {
			return -1
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// leaderWait is how long LeaderIndex waits for a leader.
const leaderWait = 20 * time.Second

// WaitFor polls cond until it holds, failing the test with what after
// timeout (testwait.For).
func (c *Cluster) WaitFor(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	testwait.For(c.t, timeout, what, cond)
}

func (c *Cluster) close() {
	var wg sync.WaitGroup
	for i, m := range c.all() {
		m.mu.Lock()
		if m.conn != nil {
			m.conn.Close()
			m.conn = nil
		}
		m.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Kill(i)
		}()
	}
	wg.Wait()
}
