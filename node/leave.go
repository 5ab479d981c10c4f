package node

import (
	"context"
	"time"

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
	if err := n.gossip.Leave(5 * time.Second); err != nil {
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
// no longer in it.
func (n *Node) waitRemoved(ctx context.Context) bool {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if servers, err := n.store.Servers(); err == nil {
			in := false
			for _, s := range servers {
				in = in || s.ID == n.cfg.Name
			}
			if !in {
				return true
			}
		}
		// Once removed, this agent stops receiving log entries; a follower
		// that no longer hears from any leader has been cut off too.
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

// Left is closed when the agent has left the cluster through Leave; the
// process should then exit.
func (n *Node) Left() <-chan struct{} { return n.left }

// Halt stops the agent at once, as a crash would: no leadership transfer,
// no gossip goodbye, sessions left for the cluster to clean up. For tests.
func (n *Node) Halt() {
	n.halting.Store(true)
	n.closing.Do(func() {
		n.cancel()
		if n.http != nil {
			n.http.Close()
		}
		if n.grpc != nil {
			n.grpc.Stop()
		}
		if n.gossip != nil {
			n.gossip.Close()
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
