package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
	"github.com/zrpcio/zrpc/storage"
)

// LeaveOptions tune Leave.
type LeaveOptions struct {
	// AllowDegraded leaves even when some of the agent's blob shards have
	// no agent to go to (every other alive agent with room holds a shard
	// of their block); without it such a leave is refused.
	AllowDegraded bool
}

// LeaveResult is what Leave reports.
type LeaveResult struct {
	// Removed: the leader confirmed the agent's removal from Raft.
	Removed bool
	// HandedOff counts the blob shards moved to other agents before the
	// agent went; ShardsLeft those it still held (not moved within ctx,
	// or with no agent to take them).
	HandedOff, ShardsLeft int
}

// Leave takes the agent out of the cluster for good: it hands its blob
// shards to the other agents (within ctx, keeping a part of it for what
// follows), hands leadership to another voter if it leads, announces its
// departure by gossip, waits (up to ctx) until the leader has removed it
// from Raft and the registry (its instances go with it), then closes the
// agent. Left() is closed once it has left; a later call reports the
// same result. A caller that cancels ctx while the shards are handed off
// (zrpcctl leave interrupted) calls the leave off: the agent stays in the
// cluster and takes shards again, and Leave returns an error wrapping
// context.Canceled. A ctx that ends by its deadline does not: the agent
// goes on leaving. A leave that would take shards no agent can take is
// refused (apierr.ErrFailedPrecondition) unless opts allow it.
func (n *Node) Leave(ctx context.Context, opts LeaveOptions) (LeaveResult, error) {
	n.leaveMu.Lock()
	defer n.leaveMu.Unlock()
	if n.leftWith != nil {
		return *n.leftWith, nil
	}
	res, err := n.leave(ctx, opts)
	if err != nil {
		return res, err
	}
	n.leftWith = &res
	close(n.left)
	return res, nil
}

func (n *Node) leave(ctx context.Context, opts LeaveOptions) (LeaveResult, error) {
	if n.alone() {
		n.log.Info("leaving the cluster for good: last member of the cluster; shutting down")
		return LeaveResult{Removed: true}, nil
	}
	if n.gossip() == nil {
		// The API serves before gossip starts (Node.Start), and a leave
		// is announced by gossip.
		return LeaveResult{}, fmt.Errorf("%w: agent %s is still starting and has no gossip yet to announce its leave; leave once it has started",
			apierr.ErrFailedPrecondition, n.cfg.Name)
	}
	h, err := n.blobs.CurrentHandoff(ctx)
	if err != nil {
		n.log.Warn("could not bring this agent's replica up to date before leaving; counting its blob shards as the replica has them", "err", err)
	}
	if h.Stuck > 0 && !opts.AllowDegraded {
		err := fmt.Errorf("%w: %d of this agent's %d blob shards have no agent to go to (every other alive agent with room holds a shard of their block): "+
			"leaving would leave their blobs one loss closer to unreadable; add an agent, bring a failed one back or free space first, or leave anyway with zrpcctl leave --allow-degraded",
			apierr.ErrFailedPrecondition, h.Stuck, h.Shards)
		n.log.Warn("leave refused; the agent stays in the cluster", "err", err)
		return LeaveResult{}, err
	}
	n.log.Info("leaving the cluster for good")
	var res LeaveResult
	// Counted before the announcement: whoever sees this agent leaving
	// finds in its Status the shards it holds.
	n.handoffShards.Store(int64(h.Shards))
	if !n.announceLeaving() {
		// Without the announcement no agent moves a shard off this one.
		n.handoffShards.Store(0)
		res.ShardsLeft = h.Shards
	} else {
		res.HandedOff, res.ShardsLeft = n.handOffShards(ctx, h)
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		n.stay()
		return res, fmt.Errorf("leave called off while handing blob shards off (%d moved, staying where they are now): the agent stays in the cluster: %w",
			res.HandedOff, ctx.Err())
	}
	n.transferLeadership()
	if err := n.gossip().Leave(5 * time.Second); err != nil {
		n.log.Warn("gossip leave broadcast failed", "err", err)
	}
	res.Removed = n.waitRemoved(ctx)
	if !res.Removed {
		n.log.Warn("the leader did not confirm the removal in time; it will reap this agent after dead_node_reap")
	}
	return res, nil
}

// announceLeaving says in this agent's gossip meta that it is leaving
// (gossip.Meta.Leaving): it takes no new blob shard, the leader's repair
// moves the ones it holds to other agents (storage/handoff.go), and an
// agent that gets the meta but not the direct leave notice (Gossip.Leave,
// a TCP connection this agent may not be able to open to it) still reports
// it left, not failed, once it goes: the leader then removes it at once
// instead of reaping it after dead_node_reap. It reports whether the
// announcement went out.
func (n *Node) announceLeaving() bool {
	n.leaving.Store(true)
	if err := n.gossip().UpdateMetaFrom(n.selfMeta); err != nil {
		n.log.Warn("could not announce by gossip that this agent is leaving: it goes without handing its blob shards off (repair rebuilds them from the others), and agents it cannot reach directly may report it failed",
			"err", err)
		return false
	}
	return true
}

// handOffShards waits while the leader's repair moves this agent's blob
// shards to other agents, once announceLeaving has said it is leaving:
// until none is left that an agent could take, until none has moved for
// handoffStall (no leader, or repair failing: the log and zrpcctl blob
// repair status say why), or until the part of ctx that leaving keeps for
// it ends. h is what the agent holds as it begins. It returns how many
// shards moved and how many it still holds.
func (n *Node) handOffShards(ctx context.Context, h storage.Handoff) (handedOff, left int) {
	if h.Shards == 0 {
		return 0, 0
	}
	held := h.Shards
	defer n.handoffShards.Store(0)
	n.log.Info("handing this agent's blob shards to the others before leaving", "shards", h.Shards, "bytes", h.Bytes)
	ctx, cancel := handoffContext(ctx)
	defer cancel()
	// Each count walks the replica's blob table under its read lock:
	// once a second, not more.
	t := time.NewTicker(handoffCount)
	defer t.Stop()
	start := time.Now()
	var asked, logged time.Time
	moved := start // when the count last went down
	for h.Left() > 0 {
		now := time.Now()
		if now.Sub(moved) >= handoffStall {
			n.log.Warn("leaving with blob shards not handed off: none has moved for a while (is there a leader? zrpcctl blob repair status says what repair does); repair rebuilds them from the other shards of their blocks",
				"left", h.Left(), "bytes", h.Bytes, "moved", held-h.Shards, "stalled_for", handoffStall)
			return held - h.Shards, h.Shards
		}
		// The leader scans at once when asked, once gossip has told it.
		if now.Sub(start) >= handoffFirstScan && now.Sub(asked) >= handoffRescan {
			asked = now
			if err := n.blobs.RequestRepairScan(ctx); err != nil && ctx.Err() == nil {
				n.log.Debug("could not ask the leader to move this agent's shards now; its next scan will", "err", err)
			}
		}
		if now.Sub(logged) >= handoffLogEvery {
			if !logged.IsZero() {
				n.log.Info("handing off blob shards", "left", h.Left(), "bytes", h.Bytes, "moved", held-h.Shards)
			}
			logged = now
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return held - h.Shards, h.Shards // called off: leave says so
			}
			n.log.Warn("leaving with blob shards not handed off in time: repair rebuilds them from the other shards of their blocks, which meanwhile have one shard less",
				"left", h.Left(), "bytes", h.Bytes, "moved", held-h.Shards)
			return held - h.Shards, h.Shards
		case <-t.C:
		}
		before := h.Shards
		h = n.blobs.Handoff()
		if h.Shards < before {
			moved = time.Now()
		}
		n.handoffShards.Store(int64(h.Shards))
	}
	if h.Stuck > 0 {
		n.log.Warn("blob shards no agent can take stay with this agent and go with it: every other alive agent with room holds a shard of their block; their blobs have one shard less until agents join and repair rebuilds them",
			"shards", h.Stuck, "moved", held-h.Shards)
	} else {
		n.log.Info("handed this agent's blob shards to the others", "shards", held-h.Shards, "took", time.Since(start).Round(time.Millisecond))
	}
	return held - h.Shards, h.Shards
}

// stay calls off a leave that was handing shards off: the agent announces
// that it stays, and takes shards again.
func (n *Node) stay() {
	if !n.leaving.Swap(false) {
		return
	}
	if err := n.gossip().UpdateMetaFrom(n.selfMeta); err != nil {
		n.log.Warn("could not announce by gossip that this agent stays; the others place no new shard on it until it can", "err", err)
		return
	}
	n.log.Info("leave called off: this agent stays in the cluster and takes blob shards again")
}

const (
	handoffFirstScan = 500 * time.Millisecond // gossip reaches the leader first
	handoffRescan    = 2 * time.Second
	handoffCount     = time.Second
	handoffLogEvery  = 5 * time.Second
	handoffStall     = time.Minute
	// handoffKeep is the most of a leave's time that handing shards off
	// leaves for the rest: leadership transfer and the removal.
	handoffKeep = 10 * time.Second
)

// handoffContext is the part of a leave's ctx that handing shards off may
// use: all but a third of the time left, and at most handoffKeep, which
// the leadership transfer and the removal need.
func handoffContext(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	keep := min(time.Until(deadline)/3, handoffKeep)
	return context.WithDeadline(ctx, deadline.Add(-keep))
}

// alone reports whether this agent is the only Raft server.
func (n *Node) alone() bool {
	servers, err := n.store.Servers()
	if err != nil {
		return false
	}
	for _, s := range servers {
		if s.ID != n.cfg.Name {
			return false
		}
	}
	return true
}

// waitRemoved polls the replicated Raft configuration until this agent is
// no longer in it. The leader stops replicating to a server as soon as it
// appends the configuration that removes it, so the entry that tells this
// agent may never arrive (a timed-out last append under load); from the
// second second on, the agent therefore also asks its peers, and a peer
// whose configuration no longer lists it confirms the removal (the leader
// itself may be the one it cannot reach). Were that configuration lost to a
// leader change, gossip's "left" makes the next leader remove the agent at
// once.
func (n *Node) waitRemoved(ctx context.Context) bool {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	askFrom := time.Now().Add(time.Second)
	var lastAsked time.Time
	for {
		servers, err := n.store.Servers()
		if err == nil && !slices.ContainsFunc(servers, func(s raftstore.Server) bool { return s.ID == n.cfg.Name }) {
			return true
		}
		if now := time.Now(); err == nil && now.After(askFrom) && now.Sub(lastAsked) >= 500*time.Millisecond {
			lastAsked = now
			if n.peerDropped(ctx, servers) {
				return true
			}
		}
		if n.store.Status().State == raftstore.Shutdown {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// peerDropped asks the other servers of this agent's last known
// configuration, in parallel (500 ms each), for their view of the Raft
// configuration, and reports whether one no longer lists this agent. A
// server is found at the address the replica or gossip knows.
func (n *Node) peerDropped(ctx context.Context, servers []raftstore.Server) bool {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	dropped := make(chan bool, len(servers))
	asked := 0
	for _, s := range servers {
		addr := n.peerGRPCAddr(s.ID)
		if s.ID == n.cfg.Name || addr == "" {
			continue
		}
		conn, err := n.peers.conn(addr)
		if err != nil {
			continue
		}
		asked++
		go func() {
			resp, err := pb.NewStatusClient(conn).Peers(ctx, &pb.PeersRequest{})
			dropped <- err == nil && len(resp.Peers) > 0 &&
				!slices.ContainsFunc(resp.Peers, func(p *pb.Peer) bool { return p.Id == n.cfg.Name })
		}()
	}
	for range asked {
		if <-dropped {
			return true
		}
	}
	return false
}

// Left is closed when the agent has left the cluster through Leave; the
// process should then exit.
func (n *Node) Left() <-chan struct{} { return n.left }

// Refused is closed when the cluster refused this agent for a reason it
// cannot mend by itself, such as its name belonging to another live agent
// (Refusal says why). The process should exit non-zero.
func (n *Node) Refused() <-chan struct{} { return n.refused }

// Refusal says why the cluster refused this agent (nil while it has not).
func (n *Node) Refusal() error {
	select {
	case <-n.refused:
		return n.refusal
	default:
		return nil
	}
}

// refuse records err as the reason the cluster refused this agent.
func (n *Node) refuse(err error) {
	n.refuseOnce.Do(func() {
		n.refusal = err
		close(n.refused)
	})
}

// RaftFailed is closed when the agent stopped its Raft node after its
// disk failed an fsync of the Raft log (RaftFailure says so); nil before
// Start. The process should then exit and be restarted: the agent applies
// no more writes, so neither can it keep the health of the instances it
// owns, which other agents take for alive while it gossips.
func (n *Node) RaftFailed() <-chan struct{} {
	if n.store == nil {
		return nil
	}
	return n.store.Failed()
}

// RaftFailure says why the Raft node stopped ("" while it runs).
func (n *Node) RaftFailure() string {
	if n.store == nil {
		return ""
	}
	return n.store.StoppedBy()
}

// Halt stops the agent at once, as a crash would: no leadership transfer,
// no gossip goodbye, sessions left for the cluster to clean up. For tests.
func (n *Node) Halt() {
	n.halting.Store(true)
	n.closing.Do(func() {
		n.cancel()
		if n.http != nil {
			n.http.Close()
		}
		if n.dns != nil {
			n.dns.Close()
		}
		if n.grpc != nil {
			n.grpc.Stop()
		}
		if n.gossip() != nil {
			n.gossip().Close()
		}
		n.wg.Wait()
		if n.blobs != nil {
			// A crashed agent's scrubber and orphan collector are gone
			// too; left running they would go on reading (and reporting
			// from) the data dir its next run uses.
			n.blobs.Close()
		}
		if n.peers != nil {
			n.peers.close()
		}
		if n.store != nil {
			n.store.Close()
		}
		if n.stalls != nil {
			n.stalls.Stop()
		}
		if n.dir != nil {
			n.dir.close()
		}
		n.log.Info("agent halted", "name", n.cfg.Name)
	})
}
