package node

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/raftstore"
)

// removePeer runs on the leader. It refuses to remove the leader itself
// and an agent that gossip sees alive (reconcile would add it right back;
// such an agent should leave instead).
func (n *Node) removePeer(ctx context.Context, name string) (uint64, error) {
	if name == n.cfg.Name {
		return 0, status.Errorf(codes.FailedPrecondition,
			"agent %s is the Raft leader and cannot remove itself: stop it or make it leave (`zrpcctl --addr ITS_ADDR leave`) so that another agent leads, then remove it", name)
	}
	for _, m := range n.gossip().Members() {
		if m.Name == name && (m.Status == "alive" || m.Status == "suspect") {
			return 0, status.Errorf(codes.FailedPrecondition,
				"agent %s is alive (gossip address %s): make it leave with `zrpcctl --addr %s leave`, or stop it, before removing it", name, m.Addr, m.Meta.GRPCAddr)
		}
	}
	servers, err := n.store.Servers()
	if err != nil {
		return 0, err
	}
	inRaft := make(map[string]raftstore.Server)
	for _, s := range servers {
		inRaft[s.ID] = s
	}
	fsm := n.store.FSM()
	if _, ok := inRaft[name]; !ok && fsm.Node(name) == nil && !fsm.NodeOwnsAnything(name) {
		return 0, fmt.Errorf("%w: agent %s is neither a Raft peer nor a node of the registry", apierr.ErrNotFound, name)
	}
	if err := n.newReconciler().removeMember(ctx, name, "removed by an operator (raft remove-peer)", inRaft, false); err != nil {
		return 0, err
	}
	return fsm.Revision(), nil
}
