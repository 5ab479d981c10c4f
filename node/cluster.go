package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/raftstore"
)

// Membership: gossip finds agents and notices failures; the Raft leader
// turns what gossip says into registry writes and Raft configuration
// changes (reconcile). Followers only gossip.

const peersFile = "peers.json"

// WithJoinResolver makes the agent look up the DNS names among its join
// addresses with r instead of the system's resolver (tests give one name
// several loopback addresses, as a headless Kubernetes Service has).
func WithJoinResolver(r gossip.Resolver) Option { return func(o *options) { o.joinResolver = r } }

// startGossip joins the gossip layer with this agent's addresses in its
// meta, then (in the background) joins the configured or remembered peers
// and, with bootstrap_expect, bootstraps once enough servers are seen.
func (n *Node) startGossip() error {
	key, err := n.cfg.gossipKey()
	if err != nil {
		return err
	}
	gc := n.cfg.gossipConfig()
	gc.Meta = n.selfMeta()
	gc.EncryptKey = key
	gc.KeyringFile = filepath.Join(n.cfg.DataDir, gossip.KeyringFileName)
	gc.Transport = n.opts.gossipTransport
	gc.Clock = n.opts.clock
	gc.Logger = n.log
	gc.StillMember = n.stillMember
	gc.Seeds = n.savedPeers
	gc.Resolver = n.opts.joinResolver
	gc.OnNameTaken = n.refuse // an agent in no cluster yet whose name the cluster gave another
	g, err := gossip.New(gc)
	if err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	if err := g.Start(); err != nil {
		return fmt.Errorf("start gossip on %s: %w", n.addr(n.cfg.GossipPort), err)
	}
	n.gossipAgent.Store(g)
	n.gossipRunning.Store(g)
	n.goLoop(n.consumeGossip)
	n.goLoop(n.joinPeers)
	if n.cfg.BootstrapExpect > 0 && !n.store.HadState() {
		n.goLoop(n.bootstrapExpected)
	}
	return nil
}

// raftAddrOf is the Raft address gossip knows for agent name while it is
// alive there, where Raft's transport dials it (raftstore.Config.ServerAddr):
// an agent restarted at a new address (a Kubernetes pod's new IP) is
// reached before the leader moves it in the Raft configuration, so a
// cluster whose agents all moved can still elect a leader.
func (n *Node) raftAddrOf(name string) (string, bool) {
	g := n.gossipRunning.Load()
	if g == nil {
		return "", false
	}
	m, ok := g.Member(name)
	if !ok || m.Status != gossip.StatusAlive || m.Meta.RaftAddr == "" {
		return "", false
	}
	return m.Meta.RaftAddr, true
}

// moveSelfInRaft, on the leader, records the leader's own Raft address in
// the Raft configuration when the agent came back at another address:
// reconcile moves every other agent there, never the leader itself.
func (n *Node) moveSelfInRaft(ctx context.Context) {
	servers, err := n.store.Servers()
	if err != nil {
		return
	}
	addr := n.store.RaftAddr()
	for _, s := range servers {
		if s.ID != n.cfg.Name || s.Address == addr {
			continue
		}
		if err := n.store.AddVoter(ctx, s.ID, addr); err != nil {
			n.log.Warn("could not record this leader's new Raft address", "old", s.Address, "new", addr, "err", err)
			return
		}
		n.log.Info("recorded this leader's new Raft address", "old", s.Address, "new", addr)
	}
}

// gossip is the agent's gossip, nil until it started.
func (n *Node) gossip() *gossip.Gossip { return n.gossipAgent.Load() }

// stillMember reports whether agent name belongs to the cluster as this
// replica knows it: it is in the Raft configuration or the node table (it
// has not been reaped). Gossip keeps trying to rejoin such agents after it
// saw them fail, so that a healed partition merges again.
func (n *Node) stillMember(name string) bool {
	if servers, err := n.store.Servers(); err == nil {
		for _, s := range servers {
			if s.ID == name {
				return true
			}
		}
	}
	return n.store.FSM().Node(name) != nil
}

func (n *Node) selfMeta() gossip.Meta {
	return gossip.Meta{
		Name: n.cfg.Name, GRPCAddr: n.GRPCAddr(), RaftAddr: n.store.RaftAddr(),
		Role: "server", Build: n.cfg.Build, Zone: n.cfg.Zone, ClusterID: n.clusterID(), RecoveredFrom: n.recoveredFrom(), FSMVersion: raftstore.FSMVersion,
		RaftHello: true, ShardsFull: n.shardsFull.Load(), ShardRoom: n.shardRoom.Load(),
		Leaving: n.leaving.Load(), NonVoter: n.cfg.NonVoter,
	}
}

// peerReadsHello tells the Raft transport whether the agent at the Raft
// address addr reads the cluster hello (raftstore.Config.PeerHello): as
// its gossip meta says when gossip knows it (agents of older builds do
// not), and yes when it does not: an address no member of this cluster
// announces may well be an agent of another one, and the hello is what
// keeps this cluster's leader from overwriting its log.
func (n *Node) peerReadsHello(addr string) bool {
	g := n.gossip()
	if g == nil {
		return true
	}
	for _, m := range g.Members() {
		if m.Meta.RaftAddr == addr {
			return m.Meta.RaftHello
		}
	}
	return true
}

// consumeGossip drains membership events, remembers peers for the next
// start, and wakes the reconcile loop.
func (n *Node) consumeGossip(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-n.gossip().Events():
			if !ok {
				return
			}
			n.log.Info("membership event", "event", ev.Type.String(), "member", ev.Member.Name, "addr", ev.Member.Addr)
			n.savePeers()
			select {
			case n.reconcileWake <- struct{}{}:
			default:
			}
		}
	}
}

// savePeers writes the gossip addresses of the other alive members, so a
// restarted agent rejoins without being told where.
func (n *Node) savePeers() {
	var addrs []string
	for _, m := range n.gossip().Members() {
		if m.Name != n.cfg.Name && m.Status == "alive" {
			addrs = append(addrs, m.Addr)
		}
	}
	if len(addrs) == 0 {
		return
	}
	sort.Strings(addrs)
	b, _ := json.Marshal(addrs)
	if err := writeFileSync(filepath.Join(n.dir.path, peersFile), b); err != nil {
		n.log.Warn("could not remember peers", "err", err)
	}
}

func (n *Node) savedPeers() []string {
	b, err := os.ReadFile(filepath.Join(n.dir.path, peersFile))
	if err != nil {
		return nil
	}
	var addrs []string
	if err := json.Unmarshal(b, &addrs); err != nil {
		n.log.Warn("ignoring unreadable peers file", "file", peersFile, "err", err)
		return nil
	}
	return addrs
}

// joinPeers joins the configured addresses and the peers it remembers
// (an agent restarted with state, or stopped while it was joining),
// retrying until one answers. A refusal no retry can mend (the name
// belongs to another agent, or the cluster was recovered on another agent
// and this one's state is from before) refuses the agent: its process
// exits with the error, which says what to do.
func (n *Node) joinPeers(ctx context.Context) {
	addrs := joinAddrs(n.cfg.Join, n.savedPeers())
	if len(addrs) == 0 {
		return
	}
	if err := n.gossip().JoinRetry(ctx, addrs, n.cfg.JoinMaxBackoff); err != nil {
		if ctx.Err() == nil {
			n.log.Error("could not join the cluster", "addrs", addrs, "err", err)
		}
		if errors.Is(err, gossip.ErrNameTaken) || errors.Is(err, gossip.ErrRecoveredElsewhere) {
			n.refuse(err)
		}
		return
	}
	n.log.Info("joined the cluster", "via", addrs)
}

// joinAddrs is the configured join addresses, then the remembered peers,
// each once: a peer given with --join is usually remembered too, and
// would be tried, and logged, twice.
func joinAddrs(join, saved []string) []string {
	var addrs []string
	for _, a := range slices.Concat(join, saved) {
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// An agent waiting for bootstrap_expect peers warns of it after
// formingWarnAfter, then every formingWarnEvery.
const (
	formingWarnAfter = 10 * time.Second
	formingWarnEvery = time.Minute
)

// bootstrapExpected waits until bootstrap_expect servers (this one
// included) see each other, checks that none of them already belongs to a
// cluster, and bootstraps them all as voters. Every agent does the same with
// the same list, which Raft allows.
func (n *Node) bootstrapExpected(ctx context.Context) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	defer n.forming.Store(nil)
	started, warned := time.Now(), time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var servers []raftstore.Server
		for _, m := range n.gossip().Members() {
			if m.Status == "alive" && m.Meta.Role == "server" && m.Meta.RaftAddr != "" && !m.Meta.NonVoter {
				servers = append(servers, raftstore.Server{ID: m.Name, Address: m.Meta.RaftAddr, Suffrage: raftstore.Voter})
			}
		}
		sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
		if len(servers) < n.cfg.BootstrapExpect {
			names := make([]string, len(servers))
			for i, s := range servers {
				names[i] = s.ID
			}
			why := fmt.Sprintf("waiting to bootstrap: bootstrap_expect is %d and gossip sees %d agents (%s); start the others with --bootstrap-expect %d and --join an agent that runs",
				n.cfg.BootstrapExpect, len(servers), strings.Join(names, ", "), n.cfg.BootstrapExpect)
			n.forming.Store(&why)
			if now := time.Now(); now.Sub(started) >= formingWarnAfter && now.Sub(warned) >= formingWarnEvery {
				n.log.Warn("no cluster yet: "+why, "waiting", now.Sub(started).Round(time.Second).String())
				warned = now
			}
			continue
		}
		if addr, _ := n.store.Leader(); addr != "" {
			return // a cluster formed without us bootstrapping (we were added)
		}
		if n.anyPeerInCluster(ctx) {
			n.log.Info("a peer already belongs to a cluster; waiting to be added instead of bootstrapping")
			return
		}
		if err := n.store.BootstrapCluster(servers); err != nil {
			n.log.Error("bootstrap failed", "err", err)
		}
		return
	}
}

// anyPeerInCluster asks the other servers whether they already have Raft
// state or a leader.
func (n *Node) anyPeerInCluster(ctx context.Context) bool {
	for _, m := range n.gossip().Members() {
		if m.Name == n.cfg.Name || m.Meta.GRPCAddr == "" {
			continue
		}
		st, err := n.peerStatus(ctx, m.Meta.GRPCAddr)
		if err == nil && (st.Leader != "" || st.LastLogIndex > 0) {
			return true
		}
	}
	return false
}

// peerAnswers checks, within 500 ms, that the agent serving gRPC at
// grpcAddr answers its health check.
func (n *Node) peerAnswers(ctx context.Context, grpcAddr string) error {
	return n.askPeer(ctx, grpcAddr, func(ctx context.Context, conn grpc.ClientConnInterface) error {
		_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	})
}

// voterAnswers checks, within 500 ms, that the voter with Raft server ID
// id answers its health check: how this agent, a nonvoter that knows no
// leader, learns which voters it can reach (raftstore probe.go).
func (n *Node) voterAnswers(ctx context.Context, id string) error {
	addr := n.peerGRPCAddr(id)
	if addr == "" {
		return fmt.Errorf("gRPC address of voter %s not known", id)
	}
	return n.peerAnswers(ctx, addr)
}

// peerStatus asks the agent serving gRPC at grpcAddr for its Status,
// within 500 ms.
func (n *Node) peerStatus(ctx context.Context, grpcAddr string) (st *pb.StatusResponse, err error) {
	err = n.askPeer(ctx, grpcAddr, func(ctx context.Context, conn grpc.ClientConnInterface) error {
		st, err = pb.NewStatusClient(conn).Status(ctx, &pb.StatusRequest{})
		return err
	})
	return st, err
}

// askPeer runs call on this agent's connection to the agent serving gRPC
// at grpcAddr, within 500 ms.
func (n *Node) askPeer(ctx context.Context, grpcAddr string, call func(context.Context, grpc.ClientConnInterface) error) error {
	conn, err := n.peers.conn(grpcAddr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	return call(ctx, conn)
}

// clusterFSMVersion is the oldest state machine version (raftstore.
// FSMVersion) among the Raft servers and the agents named, as their
// gossip meta says, or said last for one gossip no longer lists, or else
// as the registry's node record of the agent says; an agent that
// announces none, or that neither knows, counts as 1.
func (n *Node) clusterFSMVersion(names ...string) int {
	servers, err := n.store.Servers()
	if err != nil {
		return 1
	}
	v := raftstore.FSMVersion
	check := func(name string) {
		if name == n.cfg.Name {
			return
		}
		fv, known := 0, false
		if g := n.gossip(); g != nil {
			var m gossip.Member
			if m, known = g.LastKnown(name); known {
				fv = m.Meta.FSMVersion
			}
		}
		if rec := n.store.FSM().Node(name); !known && rec != nil {
			fv = int(rec.GetFsmVersion())
		}
		v = min(v, max(fv, 1))
	}
	for _, s := range servers {
		check(s.ID)
	}
	for _, name := range names {
		check(name)
	}
	return v
}
