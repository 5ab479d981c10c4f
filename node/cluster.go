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
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/raftstore"
)

// Membership: gossip finds agents and notices failures; the Raft leader
// turns what gossip says into registry writes and Raft configuration
// changes (reconcile). Followers only gossip.

const peersFile = "peers.json"

// startGossip joins the gossip layer with this agent's addresses in its
// meta, then (in the background) joins the configured or remembered peers
// and, with bootstrap_expect, bootstraps once enough servers are seen.
func (n *Node) startGossip() error {
	key, err := n.cfg.gossipKey()
	if err != nil {
		return err
	}
	g, err := gossip.New(gossip.Config{
		Name:          n.cfg.Name,
		BindAddr:      n.cfg.BindAddr,
		BindPort:      n.cfg.GossipPort,
		AdvertiseAddr: n.cfg.AdvertiseAddr,
		Meta:          n.selfMeta(),
		Profile:       gossip.Profile(n.cfg.GossipProfile),
		EncryptKey:    key,
		Transport:     n.opts.gossipTransport,
		Logger:        n.log,
		StillMember:   n.stillMember,
		Seeds:         n.savedPeers,
	})
	if err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	if err := g.Start(); err != nil {
		return fmt.Errorf("start gossip on %s: %w", n.addr(n.cfg.GossipPort), err)
	}
	n.gossip = g
	n.goLoop(n.consumeGossip)
	n.goLoop(n.joinPeers)
	if n.cfg.BootstrapExpect > 0 && !n.store.HadState() {
		n.goLoop(n.bootstrapExpected)
	}
	return nil
}

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
		Role: "server", Build: Build, Zone: n.cfg.Zone, ClusterID: n.clusterID(),
	}
}

// consumeGossip drains membership events, remembers peers for the next
// start, and wakes the reconcile loop.
func (n *Node) consumeGossip(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-n.gossip.Events():
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
	for _, m := range n.gossip.Members() {
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

// joinPeers joins the configured addresses and, for an agent with state,
// the peers it remembers, retrying until one answers.
func (n *Node) joinPeers(ctx context.Context) {
	addrs := slices.Clone(n.cfg.Join)
	if n.store.HadState() {
		addrs = append(addrs, n.savedPeers()...)
	}
	if len(addrs) == 0 {
		return
	}
	if err := n.gossip.JoinRetry(ctx, addrs, n.cfg.JoinMaxBackoff); err != nil {
		if ctx.Err() == nil {
			n.log.Error("could not join the cluster", "addrs", addrs, "err", err)
		}
		return
	}
	n.log.Info("joined the cluster", "via", addrs)
}

// bootstrapExpected waits until bootstrap_expect servers (this one
// included) see each other, checks that none of them already belongs to a
// cluster, and bootstraps them all as voters. Every agent does the same with
// the same list, which Raft allows.
func (n *Node) bootstrapExpected(ctx context.Context) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var servers []raftstore.Server
		for _, m := range n.gossip.Members() {
			if m.Status == "alive" && m.Meta.Role == "server" && m.Meta.RaftAddr != "" {
				servers = append(servers, raftstore.Server{ID: m.Name, Address: m.Meta.RaftAddr, Suffrage: raftstore.Voter})
			}
		}
		if len(servers) < n.cfg.BootstrapExpect {
			continue
		}
		if addr, _ := n.store.Leader(); addr != "" {
			return // a cluster formed without us bootstrapping (we were added)
		}
		if n.anyPeerInCluster(ctx) {
			n.log.Info("a peer already belongs to a cluster; waiting to be added instead of bootstrapping")
			return
		}
		sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
		if err := n.store.BootstrapCluster(servers); err != nil {
			n.log.Error("bootstrap failed", "err", err)
		}
		return
	}
}

// anyPeerInCluster asks the other servers whether they already have Raft
// state or a leader.
func (n *Node) anyPeerInCluster(ctx context.Context) bool {
	for _, m := range n.gossip.Members() {
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

func (n *Node) peerStatus(ctx context.Context, grpcAddr string) (*pb.StatusResponse, error) {
	conn, err := n.peers.conn(grpcAddr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	return pb.NewStatusClient(conn).Status(ctx, &pb.StatusRequest{})
}

// reconcileInterval is how often the leader re-checks membership in full,
// on top of the passes gossip events trigger.
const reconcileInterval = time.Second

// runReconcile runs on the leader. Every pass is idempotent and complete,
// so a new leader repairs whatever the previous one left undone.
func (n *Node) runReconcile(ctx context.Context) {
	failedSince := make(map[string]time.Time)
	t := time.NewTicker(reconcileInterval)
	defer t.Stop()
	for {
		if err := n.reconcile(ctx, failedSince, time.Now()); err != nil && ctx.Err() == nil {
			n.log.Warn("reconcile pass failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.reconcileWake:
		}
	}
}

func (n *Node) reconcile(ctx context.Context, failedSince map[string]time.Time, now time.Time) error {
	if n.gossip == nil {
		return nil
	}
	servers, err := n.store.Servers()
	if err != nil {
		return err
	}
	inRaft := make(map[string]raftstore.Server)
	voters := 0
	for _, s := range servers {
		inRaft[s.ID] = s
		if s.Suffrage == raftstore.Voter {
			voters++
		}
	}
	var errs []error
	seen := map[string]bool{n.cfg.Name: true}
	for _, m := range n.gossip.Members() {
		if m.Meta.Role != "server" || m.Name == n.cfg.Name {
			continue
		}
		seen[m.Name] = true
		switch m.Status {
		case "alive", "suspect":
			delete(failedSince, m.Name)
			errs = append(errs, n.reconcileAlive(ctx, m, inRaft, &voters))
		case "failed":
			if _, ok := failedSince[m.Name]; !ok {
				failedSince[m.Name] = now
			}
			errs = append(errs, n.reconcileFailed(ctx, m.Name, now.Sub(failedSince[m.Name]), inRaft))
		case "left":
			errs = append(errs, n.removeMember(ctx, m.Name, "left the cluster", inRaft))
		}
	}
	// Raft servers gossip does not know (forgotten, or never seen by this
	// leader) are removed after the reap delay, like failed ones.
	for id := range inRaft {
		if seen[id] {
			continue
		}
		if _, ok := failedSince[id]; !ok {
			failedSince[id] = now
		}
		if now.Sub(failedSince[id]) > n.cfg.DeadNodeReap {
			errs = append(errs, n.removeMember(ctx, id, "unknown to gossip past dead_node_reap", inRaft))
		}
	}
	return errors.Join(errs...)
}

// reconcileAlive makes an alive server a Raft member with up-to-date node
// information, promoting nonvoters while voters are missing.
func (n *Node) reconcileAlive(ctx context.Context, m gossip.Member, inRaft map[string]raftstore.Server, voters *int) error {
	fsm := n.store.FSM()
	want := &pb.Node{Name: m.Name, GrpcAddress: m.Meta.GRPCAddr, RaftAddress: m.Meta.RaftAddr, Zone: m.Meta.Zone, Build: m.Meta.Build, Health: pb.Health_PASSING}
	cur := fsm.Node(m.Name)
	if cur != nil && cur.Health == pb.Health_CRITICAL {
		cmd := &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: &pb.SetHealth{Node: m.Name, Health: pb.Health_PASSING, Output: "agent alive again"}}}
		if _, err := n.store.Apply(ctx, cmd); err != nil {
			return fmt.Errorf("mark %s alive: %w", m.Name, err)
		}
		n.log.Info("agent alive again; its instances are passing", "member", m.Name)
		cur = fsm.Node(m.Name)
	}
	if cur == nil || cur.GrpcAddress != want.GrpcAddress || cur.RaftAddress != want.RaftAddress || cur.Zone != want.Zone || cur.Build != want.Build {
		if _, err := n.store.Apply(ctx, &pb.Command{Kind: &pb.Command_NodeUpsert{NodeUpsert: want}}); err != nil {
			return fmt.Errorf("record node %s: %w", m.Name, err)
		}
	}
	addr := m.Meta.RaftAddr
	srv, member := inRaft[m.Name]
	switch {
	case member && srv.Suffrage == raftstore.Voter && srv.Address == addr:
		return nil
	case *voters < n.cfg.Voters || (member && srv.Suffrage == raftstore.Voter):
		if err := n.store.AddVoter(ctx, m.Name, addr); err != nil {
			return err
		}
		if !member || srv.Suffrage != raftstore.Voter {
			*voters++
		}
		n.log.Info("added Raft voter", "member", m.Name, "addr", addr, "promoted", member)
	case !member || srv.Address != addr:
		if err := n.store.AddNonvoter(ctx, m.Name, addr); err != nil {
			return err
		}
		n.log.Info("added Raft nonvoter", "member", m.Name, "addr", addr)
	}
	return nil
}

// reconcileFailed marks a failed agent and everything it owns critical at
// once, and removes it after dead_node_reap.
func (n *Node) reconcileFailed(ctx context.Context, name string, down time.Duration, inRaft map[string]raftstore.Server) error {
	if down > n.cfg.DeadNodeReap {
		return n.removeMember(ctx, name, fmt.Sprintf("failed for %s (dead_node_reap %s)", down.Round(time.Second), n.cfg.DeadNodeReap), inRaft)
	}
	if node := n.store.FSM().Node(name); node == nil || node.Health == pb.Health_CRITICAL {
		return nil
	}
	cmd := &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: &pb.SetHealth{Node: name, Health: pb.Health_CRITICAL, Output: "agent failed: no gossip contact"}}}
	if _, err := n.store.Apply(ctx, cmd); err != nil {
		return fmt.Errorf("mark %s failed: %w", name, err)
	}
	n.log.Warn("agent failed; its instances are critical", "member", name, "reap_after", n.cfg.DeadNodeReap)
	return nil
}

// removeMember takes an agent out of Raft and the registry, with every
// instance and session it owned.
func (n *Node) removeMember(ctx context.Context, name, why string, inRaft map[string]raftstore.Server) error {
	if _, ok := inRaft[name]; ok {
		if err := n.store.RemoveServer(ctx, name); err != nil {
			return err
		}
		delete(inRaft, name)
		n.log.Info("removed agent from Raft", "member", name, "why", why)
	}
	if n.store.FSM().Node(name) == nil && !n.store.FSM().NodeOwnsAnything(name) {
		return nil
	}
	if _, err := n.store.Apply(ctx, &pb.Command{Kind: &pb.Command_NodeRemove{NodeRemove: &pb.NodeRemove{Name: name}}}); err != nil {
		return fmt.Errorf("remove node %s: %w", name, err)
	}
	n.log.Info("removed agent and its instances from the registry", "member", name, "why", why)
	return nil
}
