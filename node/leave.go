package node

import (
	"context"
	"slices"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// Leave takes the agent out of the cluster for good: it hands leadership to
// another voter if it leads, announces its departure by gossip, waits (up to
// ctx) until the leader has removed it from Raft and the registry (its
// instances go with it), then closes the agent. Left() is closed once it has
// left. It reports whether the removal was confirmed.
func (n *Node) Leave(ctx context.Context) (bool, error) {
	removed := false
	var err error
	n.leaving.Do(func() {
		removed, err = n.leave(ctx)
		close(n.left)
	})
	return removed, err
}

func (n *Node) leave(ctx context.Context) (bool, error) {
	n.log.Info("leaving the cluster for good")
	if n.alone() {
		n.log.Info("last member of the cluster; shutting down")
		return true, nil
	}
	n.transferLeadership()
	if err := n.gossip().Leave(5 * time.Second); err != nil {
		n.log.Warn("gossip leave broadcast failed", "err", err)
	}
	removed := n.waitRemoved(ctx)
	if !removed {
		n.log.Warn("the leader did not confirm the removal in time; it will reap this agent after dead_node_reap")
	}
	return removed, nil
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
// configuration, and reports whether one no longer lists this agent.
func (n *Node) peerDropped(ctx context.Context, servers []raftstore.Server) bool {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	dropped := make(chan bool, len(servers))
	asked := 0
	for _, s := range servers {
		node := n.store.FSM().Node(s.ID)
		if s.ID == n.cfg.Name || node == nil || node.GrpcAddress == "" {
			continue
		}
		conn, err := n.peers.conn(node.GrpcAddress)
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
		if n.peers != nil {
			n.peers.close()
		}
		if n.store != nil {
			n.store.Close()
		}
		if n.dir != nil {
			n.dir.close()
		}
		n.log.Info("agent halted", "name", n.cfg.Name)
	})
}
