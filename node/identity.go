package node

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// Cluster identity: the first leader of a new cluster writes a ClusterInit
// entry (raftstore/cluster.go); every agent records the id in its data dir
// and its gossip meta once it has applied the entry.

// clusterID is the id of the cluster this agent belongs to: its replica's
// once applied, before that the one its data dir recorded ("" for an agent
// that never joined a cluster).
func (n *Node) clusterID() string {
	if id := n.store.FSM().ClusterID(); id != "" {
		return id
	}
	return n.dir.clusterID
}

// recoveredFrom is the id this agent's cluster had before its last outage
// recovery (zrpcd agent recover), "" if it never had one.
func (n *Node) recoveredFrom() string {
	if ids := n.store.FSM().RecoveredFrom(); len(ids) > 0 {
		return ids[len(ids)-1]
	}
	return ""
}

// initCluster runs on the leader: a cluster without an identity (a new
// one) gets one. It retries until the entry is applied or leadership ends;
// the state machine refuses a second identity, so racing leaders are safe.
func (n *Node) initCluster(ctx context.Context) {
	for attempt := 0; n.store.FSM().ClusterID() == ""; attempt++ {
		init, err := raftstore.NewClusterInit()
		if err == nil {
			_, err = n.store.Apply(ctx, &pb.Command{Kind: &pb.Command_ClusterInit{ClusterInit: init}})
		}
		switch {
		case err == nil:
			n.log.Info("initialised the cluster's identity", "cluster_id", init.ClusterId)
			return
		case errors.Is(err, apierr.ErrAlreadyExists), ctx.Err() != nil:
			return
		}
		n.log.Warn("could not write the cluster's identity; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff(attempt)):
		}
	}
}

// recordClusterID waits until this replica knows the cluster's id, then
// writes it to the data dir (so that a lost Raft log is noticed at the
// next start) and into this agent's gossip meta (so that agents of other
// clusters refuse it).
func (n *Node) recordClusterID(ctx context.Context) {
	fsm := n.store.FSM()
	select {
	case <-ctx.Done():
		return
	case <-fsm.ClusterIDKnown():
	}
	id := fsm.ClusterID()
	switch saved := n.dir.clusterID; {
	case saved == id:
	case saved != "" && !slices.Contains(fsm.RecoveredFrom(), saved):
		n.log.Error("the data dir and the Raft state belong to different clusters", "data_dir", n.dir.path,
			"data_dir_cluster", saved, "raft_cluster", id)
	default: // a new member, or the cluster was recovered (zrpcd agent recover) with a new id
		if err := n.dir.writeClusterID(id); err != nil {
			n.log.Error("could not record the cluster id in the data dir", "err", err)
		} else {
			n.log.Info("recorded the cluster id", "cluster_id", id)
		}
	}
	if err := n.gossip().UpdateMetaFrom(n.selfMeta); err != nil && ctx.Err() == nil {
		n.log.Warn("could not announce the cluster id by gossip", "err", err)
	}
}

func backoff(attempt int) time.Duration {
	d := 10 * time.Millisecond << min(attempt, 5)
	return min(d, 200*time.Millisecond)
}
