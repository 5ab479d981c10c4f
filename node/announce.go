package node

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/node/health"
	"github.com/zrpcio/zrpc/raftstore"
)

// announceSelf records the leader's own addresses in the node table, so
// followers can forward to it, and its Raft address in the Raft
// configuration if it moved (moveSelfInRaft). A leader that was marked
// failed, or reaped, before it led (the entry of a leader that lost
// contact with it) first marks itself and its instances passing again: no
// other leader will see it come back, and its reconciler passes over
// itself. The barrier before the leader functions start makes the replica
// hold every such entry by now.
func (n *Node) announceSelf(ctx context.Context) {
	n.moveSelfInRaft(ctx)
	self := &pb.Node{
		Name: n.cfg.Name, GrpcAddress: n.GRPCAddr(), RaftAddress: n.store.RaftAddr(),
		Zone: n.cfg.Zone, Build: n.cfg.Build, Health: pb.Health_PASSING, FsmVersion: raftstore.FSMVersion,
	}
	r := n.newReconciler()
	for ctx.Err() == nil {
		cur, err := r.markAlive(ctx, n.cfg.Name)
		if err == nil && cur != nil && proto.Equal(cur, self) {
			return
		}
		if err == nil {
			if _, err = n.store.Apply(ctx, &pb.Command{Kind: &pb.Command_NodeUpsert{NodeUpsert: self}}); err == nil {
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// newHealth builds the agent's health keeper on its replica and its Raft
// writes; node runs its loops (Start) and stops them (Close).
func (n *Node) newHealth() *health.Keeper {
	return health.New(health.Config{
		Agent:         n.cfg.Name,
		Replica:       healthReplica{n.store.FSM()},
		Writer:        healthWriter{n},
		ReadReady:     func() error { return n.store.CheckRead(pb.Consistency_DEFAULT) },
		Silenced:      n.halting.Load,
		Interval:      n.cfg.HealthInterval,
		CheckTLS:      n.checkTLS,
		Now:           n.opts.clock,
		Lost:          n.stalls.Lost,
		LeaderReady:   func() bool { return n.store.LeaderReady() },
		ConfirmLeader: n.store.ReadIndex,
		Logger:        n.log,
	})
}

// healthReplica is the replica as health reads it.
type healthReplica struct{ *raftstore.FSM }

// WatchInstances follows every service from revision from.
func (r healthReplica) WatchInstances(from uint64) health.InstanceWatch { return r.Watch("", from) }

// healthWriter commits health's writes: through the leader (propose), or on
// this leader only (the TTL sweeps).
type healthWriter struct{ n *Node }

func (w healthWriter) Propose(ctx context.Context, cmd *pb.Command) (uint64, error) {
	return w.n.propose(ctx, cmd)
}

func (w healthWriter) ApplyLocal(ctx context.Context, cmd *pb.Command) (uint64, error) {
	return w.n.store.Apply(ctx, cmd)
}
