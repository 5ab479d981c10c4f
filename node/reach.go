package node

import (
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/raftstore"
)

// reach is gossip's view of agent id, which raftstore's Quorum reads:
// alive, or failed, left or unknown (also before gossip has started) and
// since when.
func (n *Node) reach(id string) raftstore.Reach {
	g := n.gossip()
	if g == nil {
		return raftstore.Reach{Status: "unknown"}
	}
	m, ok := g.LastKnown(id)
	switch {
	case !ok:
		return raftstore.Reach{Status: "unknown"}
	case m.Status == gossip.StatusAlive:
		return raftstore.Reach{Alive: true}
	}
	return raftstore.Reach{Status: m.Status, Since: m.Since}
}

// quorum is which voters this agent can reach.
func (n *Node) quorum() (raftstore.Quorum, error) { return n.store.Quorum(n.reach) }
