package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/internal/warnrate"
	"github.com/zrpcio/zrpc/node/health"
	"github.com/zrpcio/zrpc/raftstore"
)

// reconcileInterval is how often the leader re-checks membership in full,
// on top of the passes gossip events trigger.
const reconcileInterval = time.Second

// raftMembership is the Raft configuration as reconcile reads and changes
// it (raftstore.Store's cluster API). Changes need the leader.
type raftMembership interface {
	Servers() ([]raftstore.Server, error)
	AddVoter(ctx context.Context, id, addr string) error
	AddNonvoter(ctx context.Context, id, addr string) error
	DemoteVoter(ctx context.Context, id string) error
	RemoveServer(ctx context.Context, id string) error
	// Quorum says which voters are reachable: by reach, and on the
	// leader not those its heartbeats fail to reach.
	Quorum(reach raftstore.ReachFunc) (raftstore.Quorum, error)
}

// nodeTable is the registry's agents as reconcile reads them (the local
// replica, raftstore.FSM).
type nodeTable interface {
	Node(name string) *pb.Node
	Nodes() []*pb.Node
	NodeOwnsAnything(name string) bool
	NodeHasSessions(name string) bool
	KeptInstances(name string) []*pb.InstanceRef
}

// reconciler turns what gossip says into Raft configuration changes and
// registry writes. It runs on the leader, in one goroutine; every pass is
// idempotent and complete, so a new leader repairs whatever the previous
// one left undone.
type reconciler struct {
	self string
	// voters is how many voters the cluster should have (cfg.Voters).
	voters int
	// reap is how long a failed agent, or a Raft server gossip does not
	// know, stays before it is removed (cfg.DeadNodeReap).
	reap time.Duration
	// members lists what gossip knows, this agent included; nil while
	// gossip has not started (the pass then does nothing).
	members func() []gossip.Member
	raft    raftMembership
	nodes   nodeTable
	// apply commits a registry command (on the leader).
	apply func(ctx context.Context, cmd *pb.Command) (uint64, error)
	// fsmVersion is the oldest state machine version among the Raft
	// servers and the agents named (clusterFSMVersion); nil: this build's.
	fsmVersion func(names ...string) int
	// clusterID is the cluster's id (Node.clusterID); nil: every agent
	// counts as having the cluster's log (hasLog).
	clusterID func() string
	// answers reports whether agent name answers at its gRPC address, as
	// that agent of this cluster (Node.answersAs); nil: none does. Gossip
	// only infers a failure: an agent it cannot reach (its gossip port
	// blocked, a keyring out of step, gossip on the leader not joined)
	// may be running and serving its sessions, and is not reaped.
	answers func(ctx context.Context, name string) bool
	// answerWarn limits the warning about such an agent to one a minute.
	answerWarn *warnrate.Limiter
	// demoteWarn limits the warning about a demotion that waits for a
	// quorum (keepNonvoter) to one a minute per agent.
	demoteWarn *warnrate.Limiter
	log        *slog.Logger
	// failedSince is when each failed or unknown server was first seen so.
	failedSince map[string]time.Time
}

// newReconciler is the agent's reconciler, over its gossip, Raft store and
// replica.
func (n *Node) newReconciler() *reconciler {
	return &reconciler{
		self: n.cfg.Name, voters: n.cfg.Voters, reap: n.cfg.DeadNodeReap,
		members: func() []gossip.Member {
			if n.gossip() == nil {
				return nil
			}
			return n.gossip().Members()
		},
		raft: n.store, nodes: n.store.FSM(), apply: n.store.Apply, log: n.log, fsmVersion: n.clusterFSMVersion, clusterID: n.clusterID,
		answers: n.answersAs, failedSince: make(map[string]time.Time),
	}
}

// answersAs reports whether the agent at the gRPC address the replica or
// gossip knows for name answers its Status there, within 500 ms, as
// agent name of this cluster (or of none yet: the same agent on a new
// disk).
func (n *Node) answersAs(ctx context.Context, name string) bool {
	addr := n.peerGRPCAddr(name)
	if addr == "" {
		return false
	}
	st, err := n.peerStatus(ctx, addr)
	if err != nil || st.GetNode() != name {
		return false
	}
	id := n.clusterID()
	return st.GetClusterId() == "" || id == "" || st.GetClusterId() == id
}

// runReconcile runs on the leader: a full pass every reconcileInterval and
// after each gossip event, until leadership ends.
func (n *Node) runReconcile(ctx context.Context) {
	r := n.newReconciler()
	t := time.NewTicker(reconcileInterval)
	defer t.Stop()
	for {
		if err := r.reconcile(ctx, time.Now()); err != nil && ctx.Err() == nil {
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

// reconcile makes one full pass at time now.
func (r *reconciler) reconcile(ctx context.Context, now time.Time) error {
	members := r.members()
	if members == nil {
		return nil
	}
	servers, err := r.raft.Servers()
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
	// The servers gossip sees alive (or suspects), this one included: a
	// demotion waits until they make a quorum without the agent demoted.
	alive := map[string]bool{r.self: true}
	for _, m := range members {
		if m.Meta.Role == "server" && (m.Status == gossip.StatusAlive || m.Status == gossip.StatusSuspect) {
			alive[m.Name] = true
		}
	}
	var errs []error
	seen := map[string]bool{r.self: true}
	for _, m := range members {
		if m.Meta.Role != "server" || m.Name == r.self {
			continue
		}
		seen[m.Name] = true
		switch m.Status {
		case gossip.StatusAlive, gossip.StatusSuspect:
			delete(r.failedSince, m.Name)
			errs = append(errs, r.reconcileAlive(ctx, m, inRaft, alive, &voters))
		case gossip.StatusFailed:
			if _, ok := r.failedSince[m.Name]; !ok {
				r.failedSince[m.Name] = now
			}
			errs = append(errs, r.reconcileFailed(ctx, m.Name, now.Sub(r.failedSince[m.Name]), inRaft))
		case gossip.StatusLeft:
			errs = append(errs, r.removeMember(ctx, m.Name, "left the cluster", inRaft, false))
		}
	}
	// Raft servers gossip does not know (forgotten, or never seen by this
	// leader) are removed after the reap delay, like failed ones.
	for id := range inRaft {
		if seen[id] {
			continue
		}
		if _, ok := r.failedSince[id]; !ok {
			r.failedSince[id] = now
		}
		if down := now.Sub(r.failedSince[id]); down > r.reap {
			// Usually an agent that failed and that gossip has since
			// forgotten (memberlist drops dead members after a while).
			why := fmt.Sprintf("failed, or unknown to gossip, for %s (dead_node_reap %s)", down.Round(time.Second), r.reap)
			errs = append(errs, r.removeMember(ctx, id, why, inRaft, true))
		}
	}
	errs = append(errs, r.reapUnknownNodes(ctx, now, members, inRaft))
	return errors.Join(errs...)
}

// reapUnknownNodes removes, after the reap delay, the agents the registry
// records but neither gossip nor Raft knows, with the instances and
// sessions they own: those of a restored snapshot taken on another
// cluster, or of an agent whose removal never reached the registry.
func (r *reconciler) reapUnknownNodes(ctx context.Context, now time.Time, members []gossip.Member, inRaft map[string]raftstore.Server) error {
	known := map[string]bool{r.self: true}
	for _, m := range members {
		known[m.Name] = true
	}
	var errs []error
	for _, n := range r.nodes.Nodes() {
		if _, ok := inRaft[n.Name]; ok || known[n.Name] {
			continue
		}
		if _, ok := r.failedSince[n.Name]; !ok {
			r.failedSince[n.Name] = now
		}
		if now.Sub(r.failedSince[n.Name]) > r.reap {
			errs = append(errs, r.removeMember(ctx, n.Name, "unknown to gossip and Raft past dead_node_reap", inRaft, true))
			delete(r.failedSince, n.Name)
		}
	}
	return errors.Join(errs...)
}

// reconcileAlive makes an alive server a Raft member with up-to-date node
// information, promoting nonvoters while voters are missing. alive is the
// servers gossip sees alive.
func (r *reconciler) reconcileAlive(ctx context.Context, m gossip.Member, inRaft map[string]raftstore.Server, alive map[string]bool, voters *int) error {
	want := &pb.Node{Name: m.Name, GrpcAddress: m.Meta.GRPCAddr, RaftAddress: m.Meta.RaftAddr, Zone: m.Meta.Zone, Build: m.Meta.Build, Health: pb.Health_PASSING,
		FsmVersion: uint32(m.Meta.FSMVersion)}
	cur, err := r.markAlive(ctx, m.Name)
	if err != nil {
		return err
	}
	if cur == nil || cur.GrpcAddress != want.GrpcAddress || cur.RaftAddress != want.RaftAddress || cur.Zone != want.Zone || cur.Build != want.Build ||
		cur.FsmVersion != want.FsmVersion {
		if _, err := r.apply(ctx, &pb.Command{Kind: &pb.Command_NodeUpsert{NodeUpsert: want}}); err != nil {
			return fmt.Errorf("record node %s: %w", m.Name, err)
		}
	}
	addr := m.Meta.RaftAddr
	srv, member := inRaft[m.Name]
	if m.Meta.NonVoter {
		return r.keepNonvoter(ctx, m.Name, addr, srv, member, alive, voters)
	}
	switch {
	case member && srv.Suffrage == raftstore.Voter && srv.Address == addr:
		return nil
	case !(member && srv.Suffrage == raftstore.Voter) && *voters < r.voters && !r.hasLog(m):
		// A voter is missing, but this agent has not received the log
		// yet: as a voter it would refuse its vote to every candidate
		// until a leader sent it the log (raftstore's vote gate), and a
		// leader that stepped down then (a lease lost under load) could
		// not be elected again where its vote is needed for a majority:
		// no leader, for good. It stays a nonvoter until its gossip says
		// it has the cluster's log, as Consul's autopilot promotes a
		// server only once it has caught up.
		if !member || srv.Address != addr {
			if err := r.raft.AddNonvoter(ctx, m.Name, addr); err != nil {
				return err
			}
			r.log.Info("added Raft nonvoter; it becomes a voter once it has the cluster's log", "member", m.Name, "addr", addr)
		}
	case *voters < r.voters || (member && srv.Suffrage == raftstore.Voter):
		if !member {
			// A new agent joins as a nonvoter first, promoted once that
			// is committed: a voter refuses the votes of a candidate its
			// own configuration lacks (hashicorp/raft), so a voter added
			// at once, committed by the leader and the new agent alone,
			// leaves a lagging voter unable to elect it should the leader
			// die then, and the cluster without a leader until the old
			// one returns. Committed as a nonvoter, the agent is in the
			// configuration of a majority of the voters before it votes.
			if err := r.raft.AddNonvoter(ctx, m.Name, addr); err != nil {
				return err
			}
		}
		if err := r.raft.AddVoter(ctx, m.Name, addr); err != nil {
			return err
		}
		if !member || srv.Suffrage != raftstore.Voter {
			*voters++
		}
		r.log.Info("added Raft voter", "member", m.Name, "addr", addr, "promoted", member)
	case !member || srv.Address != addr:
		if err := r.raft.AddNonvoter(ctx, m.Name, addr); err != nil {
			return err
		}
		r.log.Info("added Raft nonvoter", "member", m.Name, "addr", addr)
	}
	return nil
}

// keepNonvoter makes agent name, which announces non_voter, a nonvoter:
// added as one, never promoted, and demoted if it is a voter (it was one
// before its setting changed); another agent is then promoted in its
// place, on this pass or the next, if there is one to promote.
//
// A voter is demoted only while the other voters that gossip sees alive
// and the leader's heartbeats reach make a majority of the voters left:
// with a voter failed, say the third of three, the leader and the failed
// one would need each other, the leader could commit nothing more (the
// failed voter's reap included), and no leader could be elected until it
// returned. The demotion waits until the failed voter is back or reaped.
func (r *reconciler) keepNonvoter(ctx context.Context, name, addr string, srv raftstore.Server, member bool,
	alive map[string]bool, voters *int) error {
	switch {
	case member && srv.Suffrage == raftstore.Voter:
		left, reachable, err := r.votersWithout(name, alive)
		if err != nil {
			return err
		}
		if reachable < left/2+1 {
			if r.demoteWarn == nil {
				r.demoteWarn = warnrate.New(time.Minute, 1024, time.Now)
			}
			if pass, _ := r.demoteWarn.Seen(name); pass {
				r.log.Warn("not demoting a voter set non_voter yet: without it too few of the other voters are reachable for a quorum; it is demoted once the failed voters are back or reaped",
					"member", name, "voters_left", left, "reachable", reachable, "needed", left/2+1)
			}
			if srv.Address == addr {
				return nil
			}
			// Its new address, kept a voter (AddNonvoter leaves a
			// voter a voter).
			if err := r.raft.AddNonvoter(ctx, name, addr); err != nil {
				return err
			}
			r.log.Info("updated the Raft address of a voter set non_voter", "member", name, "addr", addr)
			return nil
		}
		if err := r.raft.DemoteVoter(ctx, name); err != nil {
			return err
		}
		*voters--
		r.log.Info("demoted Raft voter: the agent is set non_voter", "member", name)
		if srv.Address == addr {
			return nil
		}
		fallthrough
	case !member || srv.Address != addr:
		if err := r.raft.AddNonvoter(ctx, name, addr); err != nil {
			return err
		}
		r.log.Info("added Raft nonvoter (the agent is set non_voter: it is never promoted)", "member", name, "addr", addr)
	}
	return nil
}

// votersWithout counts the voters of the configuration other than voter
// name, and those of them reachable: alive to gossip and, on the leader,
// answering its heartbeats.
func (r *reconciler) votersWithout(name string, alive map[string]bool) (voters, reachable int, err error) {
	q, err := r.raft.Quorum(func(id string) raftstore.Reach { return raftstore.Reach{Alive: alive[id]} })
	if err != nil {
		return 0, 0, err
	}
	reachable = q.Reachable()
	if !slices.ContainsFunc(q.Unreachable, func(u raftstore.Unreachable) bool { return u.ID == name }) {
		reachable--
	}
	return q.Voters - 1, reachable, nil
}

// markAlive marks an agent that is alive, and what it owns, passing where a
// leader marked it failed (its node record is critical) or reaped it (it
// has no record, and instances the reap kept). It returns the agent's node
// record after.
func (r *reconciler) markAlive(ctx context.Context, name string) (*pb.Node, error) {
	cur := r.nodes.Node(name)
	// An agent back after its reap has no node record; the instances its
	// reap kept (removeMember) pass again, and only those: a new agent's
	// first registrations, made before its record, keep their health.
	// KeptInstances walks the registry: only for an agent without a record,
	// not for every member on every pass.
	if cur == nil {
		if kept := r.nodes.KeptInstances(name); len(kept) > 0 {
			cmd := &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: &pb.SetHealth{Instances: kept, Health: pb.Health_PASSING, Output: health.AgentAliveAgain}}}
			if _, err := r.apply(ctx, cmd); err != nil {
				return nil, fmt.Errorf("mark %s alive: %w", name, err)
			}
			r.log.Info("agent back after its reap; the instances it kept are passing", "member", name, "instances", len(kept))
		}
		return nil, nil
	}
	if cur.Health != pb.Health_CRITICAL {
		return cur, nil
	}
	cmd := &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: &pb.SetHealth{Node: name, Health: pb.Health_PASSING, Output: health.AgentAliveAgain}}}
	if _, err := r.apply(ctx, cmd); err != nil {
		return nil, fmt.Errorf("mark %s alive: %w", name, err)
	}
	r.log.Info("agent alive again; its instances are passing", "member", name)
	return r.nodes.Node(name), nil
}

// hasLog reports whether member m has applied the cluster's log, as its
// gossip meta says (the cluster's id, from the log's first entries). An
// agent of a build that announces no state machine version predates the
// id in gossip and counts as having it.
func (r *reconciler) hasLog(m gossip.Member) bool {
	if r.clusterID == nil || m.Meta.FSMVersion == 0 {
		return true
	}
	id := r.clusterID()
	return id == "" || m.Meta.ClusterID != ""
}

// reconcileFailed marks a failed agent and everything it owns critical at
// once, and removes it after dead_node_reap.
func (r *reconciler) reconcileFailed(ctx context.Context, name string, down time.Duration, inRaft map[string]raftstore.Server) error {
	if down > r.reap {
		return r.removeMember(ctx, name, fmt.Sprintf("failed for %s (dead_node_reap %s)", down.Round(time.Second), r.reap), inRaft, true)
	}
	if node := r.nodes.Node(name); node == nil || node.Health == pb.Health_CRITICAL {
		return nil
	}
	cmd := &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: &pb.SetHealth{Node: name, Health: pb.Health_CRITICAL, Output: health.AgentFailed}}}
	if _, err := r.apply(ctx, cmd); err != nil {
		return fmt.Errorf("mark %s failed: %w", name, err)
	}
	r.log.Warn("agent failed; its instances are critical", "member", name, "reap_after", r.reap)
	return nil
}

// registryHolds reports whether the registry holds what removing agent
// name takes: its record, its sessions, and unless it is reaped (a reap
// keeps the instances registered through it without a session: reaped
// already, what it kept stays) any instance it owns.
func (r *reconciler) registryHolds(name string, reap bool) bool {
	if r.nodes.Node(name) != nil {
		return true
	}
	if reap {
		return r.nodes.NodeHasSessions(name)
	}
	return r.nodes.NodeOwnsAnything(name)
}

// removeMember takes an agent out of Raft and the registry, with every
// session it owned and the instances bound to them. The instances
// registered through it without a session go too when it left or an
// operator removed it; when it is reaped (reap: it failed, or gossip lost
// it, for dead_node_reap) they stay, critical, saying why: nothing proves
// them gone, and nothing would register them again. They pass again if
// the agent comes back (reconcileAlive), and go when deregistered, when
// their deregister_critical_after runs out, or when the agent is removed
// with `zrpcctl raft remove-peer`. Nor is an agent reaped while it
// answers at its gRPC address (answers): it runs, whatever gossip says.
func (r *reconciler) removeMember(ctx context.Context, name, why string, inRaft map[string]raftstore.Server, reap bool) error {
	// Replicas of builds before keep_unbound would delete what the others
	// keep: while any server (or the agent reaped, should it come back)
	// runs one, a reap removes everything, as they do.
	keep := reap && (r.fsmVersion == nil || r.fsmVersion(name) >= 2)
	_, member := inRaft[name]
	if !member && !r.registryHolds(name, reap) {
		return nil
	}
	if reap && r.answers != nil && r.answers(ctx, name) {
		if r.answerWarn == nil {
			r.answerWarn = warnrate.New(time.Minute, 1024, time.Now)
		}
		if pass, _ := r.answerWarn.Seen(name); pass {
			r.log.Warn("not reaping an agent that answers at its gRPC address although gossip counts it failed or does not know it: "+
				"check that the agents reach each other's gossip port (tcp and udp) and share the gossip key",
				"member", name, "why", why)
		}
		return nil
	}
	if member {
		if err := r.raft.RemoveServer(ctx, name); err != nil {
			return err
		}
		delete(inRaft, name)
		r.log.Info("removed agent from Raft", "member", name, "why", why)
	}
	if !r.registryHolds(name, reap) {
		return nil
	}
	rm := &pb.NodeRemove{Name: name}
	if keep {
		rm.KeepUnbound = true
		rm.Output = fmt.Sprintf("%s %s: %s; the instance stays until it is deregistered, or passes again when %s is back", raftstore.ReapedOutputPrefix, name, why, name)
	}
	if _, err := r.apply(ctx, &pb.Command{Kind: &pb.Command_NodeRemove{NodeRemove: rm}}); err != nil {
		return fmt.Errorf("remove node %s: %w", name, err)
	}
	switch {
	case keep:
		r.log.Info("removed agent and its sessions from the registry; its instances without a session stay, critical", "member", name, "why", why)
	case reap:
		r.log.Warn("removed agent and all its instances from the registry, those without a session too: an agent of an older build is in the cluster, and would delete them anyway; finish the upgrade",
			"member", name, "why", why)
	default:
		r.log.Info("removed agent and its instances from the registry", "member", name, "why", why)
	}
	return nil
}
