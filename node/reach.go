package node

import (
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/raftstore"
)

// reach is gossip's view of agent id, which raftstore's Quorum reads:
// alive, or failed, left or unknown (also before gossip has started) and
// since when. An agent gossip sees alive whose meta carries no cluster id
// while this agent knows the cluster's has not applied the cluster's log:
// a new or wiped data dir. It counts as not reachable, since it refuses
// to vote until a leader has sent it the log (raftstore/votegate.go); as
// its meta says so up to a second or more after it has the log, an alive
// one counts as Lagging.
func (n *Node) reach(id string) raftstore.Reach {
	g := n.gossip()
	if g == nil {
		return raftstore.Reach{Status: "unknown"}
	}
	m, ok := g.LastKnown(id)
	switch {
	case !ok:
		return raftstore.Reach{Status: "unknown"}
	case m.LacksCluster(n.clusterID()):
		return raftstore.Reach{Status: NoRaftState, Lagging: m.Status == gossip.StatusAlive}
	case m.Status == gossip.StatusAlive:
		return raftstore.Reach{Alive: true}
	}
	return raftstore.Reach{Status: m.Status, Since: m.Since}
}

// NoRaftState is the reach status of an agent that is alive without the
// cluster's log.
const NoRaftState = "has no Raft state yet (a new or wiped data dir: it votes once a leader has sent it the log)"

// quorum is which voters this agent can reach.
func (n *Node) quorum() (raftstore.Quorum, error) { return n.store.Quorum(n.reach) }
