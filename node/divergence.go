package node

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// Every replica keeps an apply hash, a running hash of the writes it
// applied (raftstore applyhash.go): replicas that applied the same
// history have the same one at every revision. The Raft leader compares
// each other Raft server's with its own every divergenceCheckEvery, at
// the revision both have reached, and reports a replica whose hash
// differs: its registry diverged from the leader's (it applied a write
// the cluster never committed, or missed one), which nothing else would
// show once later writes covered it.

// divergenceCheckEvery is how often the leader compares the replicas.
// Each comparison costs every peer two Status calls.
const divergenceCheckEvery = 30 * time.Second

// watchDivergence compares the replicas' apply hashes every
// divergenceCheckEvery while this agent leads, until ctx ends.
func (n *Node) watchDivergence(ctx context.Context) {
	t := time.NewTicker(divergenceCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n.store.Status().State == raftstore.Leader {
			n.compareApplyHashes(ctx)
		}
	}
}

// replicaDivergence is a peer whose apply hash differs from this
// replica's at a revision both applied.
type replicaDivergence struct {
	peer                 string
	revision             uint64
	peerHash, leaderHash uint64
}

// compareApplyHashes asks every other Raft server, in parallel, for its
// apply hash at the latest revision both it and this replica applied,
// logs an error and counts each one whose hash differs from this
// replica's, and returns how many it could compare (a peer that does not
// answer, lags by more than the hashes a replica remembers, or does not
// know its hash is left out).
func (n *Node) compareApplyHashes(ctx context.Context) int {
	servers, err := n.store.Servers()
	if err != nil {
		return 0
	}
	var (
		mu       sync.Mutex
		compared int
		diverged []replicaDivergence
		wg       sync.WaitGroup
	)
	for _, s := range servers {
		addr := n.peerGRPCAddr(s.ID)
		if s.ID == n.cfg.Name || addr == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, ok := n.compareApplyHash(ctx, s.ID, addr)
			if !ok {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			compared++
			if d.peerHash != d.leaderHash {
				diverged = append(diverged, d)
			}
		}()
	}
	wg.Wait()
	for _, d := range diverged {
		n.metrics.divergence.Inc()
		n.log.Error(fmt.Sprintf("replica %s diverged from the leader: its apply hash at revision %d differs from the leader's, so it applied writes the cluster did not commit, or missed some, and its registry may answer what the cluster never held; "+
			"stop agent %s, move its data dir aside, and start it again empty with --join to take the leader's state (if the leader reports most of its peers, its own replica is the likelier one: transfer leadership first and see what the new leader reports)",
			d.peer, d.revision, d.peer),
			"peer", d.peer, "revision", d.revision, "peer_apply_hash", fmt.Sprintf("%08x", d.peerHash), "leader_apply_hash", fmt.Sprintf("%08x", d.leaderHash))
	}
	return compared
}

// compareApplyHash asks the Raft server id, serving gRPC at addr, for its
// revision and then its apply hash at the latest revision both it and
// this replica applied. ok is false when either cannot tell it.
func (n *Node) compareApplyHash(ctx context.Context, id, addr string) (d replicaDivergence, ok bool) {
	st, err := n.peerStatus(ctx, addr)
	if err != nil {
		return d, false
	}
	fsm := n.store.FSM()
	rev := min(fsm.Revision(), st.GetHeader().GetRevision())
	own, known := fsm.ApplyHash(rev)
	if rev == 0 || !known {
		return d, false
	}
	err = n.askPeer(ctx, addr, func(ctx context.Context, conn grpc.ClientConnInterface) error {
		st, err = pb.NewStatusClient(conn).Status(ctx, &pb.StatusRequest{ApplyHashAt: rev})
		return err
	})
	if err != nil || !st.GetApplyHashKnown() {
		return d, false
	}
	return replicaDivergence{peer: id, revision: rev, peerHash: st.GetApplyHash(), leaderHash: own}, true
}
