package node

import (
	"context"
	"fmt"
	"slices"
	"strings"
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
//
// A replica restored from a snapshot written before apply hashes existed
// knows no hash, nor do the snapshots it takes: left so, it would never
// be compared. The leader then proposes an ApplyHashRestart, once every
// Raft server applies it (state machine version 7): every replica
// restarts its hash at that entry, and the next check compares them.

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
// know its hash is left out). When this replica or a peer knows no hash
// at all, it proposes an ApplyHashRestart if every Raft server applies
// one.
func (n *Node) compareApplyHashes(ctx context.Context) int {
	return n.compareApplyHashesRestarting(ctx, n.store.ClusterAt(raftstore.ApplyHashRestartVersion))
}

// compareApplyHashesRestarting is compareApplyHashes, which proposes an
// ApplyHashRestart only when restart is set.
func (n *Node) compareApplyHashesRestarting(ctx context.Context, restart bool) int {
	servers, err := n.store.Servers()
	if err != nil {
		return 0
	}
	var (
		mu       sync.Mutex
		compared int
		diverged []replicaDivergence
		without  []string // agents whose replica knows no apply hash
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
			d, ok, noHash := n.compareApplyHash(ctx, s.ID, addr, restart)
			mu.Lock()
			defer mu.Unlock()
			if noHash {
				without = append(without, s.ID)
			}
			if !ok {
				return
			}
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
	if !n.store.FSM().ApplyHashChainKnown() {
		without = append(without, n.cfg.Name)
	}
	if restart && len(without) > 0 {
		n.restartApplyHashes(ctx, without)
	}
	return compared
}

// applyHashRestartWait bounds how long the leader waits for its
// ApplyHashRestart to be applied.
const applyHashRestartWait = 10 * time.Second

// restartApplyHashes proposes an ApplyHashRestart, since the replicas of
// the agents without know no apply hash.
func (n *Node) restartApplyHashes(ctx context.Context, without []string) {
	slices.Sort(without)
	agents := "agent " + without[0]
	if len(without) > 1 {
		agents = "agents " + strings.Join(without, ", ")
	}
	ctx, cancel := context.WithTimeout(ctx, applyHashRestartWait)
	defer cancel()
	rev, err := n.store.Apply(ctx, &pb.Command{Kind: &pb.Command_ApplyHashRestart{ApplyHashRestart: &pb.ApplyHashRestart{}}})
	if err != nil {
		n.log.Warn(fmt.Sprintf("could not restart the apply hashes, which %s had none of (restored from a snapshot of an older build), so their replicas cannot be checked for divergence: %v; the leader tries again in %s",
			agents, err, divergenceCheckEvery), "agents", without)
		return
	}
	n.log.Info(fmt.Sprintf("apply hashes restarted at revision %d: %s had none (restored from a snapshot of an older build); the next check compares them", rev, agents),
		"revision", rev, "agents", without)
}

// compareApplyHash asks the Raft server id, serving gRPC at addr, for its
// revision and then its apply hash at the latest revision both it and
// this replica applied. ok is false when either cannot tell it. v7 says
// that every Raft server is of state machine version 7, whose Status
// tells whether it knows its apply hash at all (older builds say it
// does not); noHash is then true when the peer knows none, and has
// applied the last ApplyHashRestart this replica did (one behind it is
// about to know its hash).
func (n *Node) compareApplyHash(ctx context.Context, id, addr string, v7 bool) (d replicaDivergence, ok, noHash bool) {
	st, err := n.peerStatus(ctx, addr)
	if err != nil {
		return d, false, false
	}
	fsm := n.store.FSM()
	peerRev := st.GetHeader().GetRevision()
	if v7 && !st.GetApplyHashChainKnown() {
		return d, false, peerRev >= fsm.ApplyHashRestartedAt()
	}
	rev := min(fsm.Revision(), peerRev)
	own, known := fsm.ApplyHash(rev)
	if rev == 0 || !known {
		return d, false, false
	}
	err = n.askPeer(ctx, addr, func(ctx context.Context, conn grpc.ClientConnInterface) error {
		st, err = pb.NewStatusClient(conn).Status(ctx, &pb.StatusRequest{ApplyHashAt: rev})
		return err
	})
	if err != nil || !st.GetApplyHashKnown() {
		return d, false, false
	}
	return replicaDivergence{peer: id, revision: rev, peerHash: st.GetApplyHash(), leaderHash: own}, true, false
}
