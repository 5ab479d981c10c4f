package node

import (
	"context"
	"time"
)

// voteHold bounds how long a restarted agent refuses votes while it asks
// its peers what is committed (learnCommitted).
const voteHold = 3 * time.Second

// learnCommitted asks the agent's Raft peers, at start, for the highest
// index each knows committed, raises the vote gate's floor to the highest
// answer and ends the hold on votes the store opened with (raftstore
// votegate.go). An agent whose data dir was restored from an old copy,
// its leader gone, then refuses to elect a lagging candidate that lacks
// writes the cluster acknowledged after the copy was taken.
//
// A peer's gRPC address comes from the replica's node table or, for a
// replica that has not replayed it yet, from gossip once it has joined;
// the agent asks each peer once it knows where, until all have answered,
// or failed twice (a peer that is down knows nothing now: a cluster
// restarted whole elects without waiting the hold out), or most of the
// hold has passed.
func (n *Node) learnCommitted(ctx context.Context) {
	defer n.store.ReleaseVotes()
	servers, err := n.store.Servers()
	if err != nil {
		return
	}
	pending := make(map[string]bool)
	for _, s := range servers {
		if s.ID != n.cfg.Name {
			pending[s.ID] = true
		}
	}
	answers := make(chan answer, len(pending))
	var best uint64
	var from string
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(voteHold - 500*time.Millisecond)
	asked := make(map[string]bool)
	var failed []string // asked again at the next tick, perhaps at a newer address
	failures := make(map[string]int)
	for len(pending) > 0 {
		for id := range pending {
			addr := n.peerGRPCAddr(id)
			if asked[id] || addr == "" {
				continue
			}
			asked[id] = true
			go func() {
				st, err := n.peerStatus(ctx, addr)
				answers <- answer{id, st.GetCommitSeen(), err}
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline:
			pending = nil
		case a := <-answers:
			if a.err != nil {
				if failures[a.id]++; failures[a.id] >= 2 {
					delete(pending, a.id)
				} else {
					failed = append(failed, a.id)
				}
				continue
			}
			delete(pending, a.id)
			if a.commit > best {
				best, from = a.commit, a.id
			}
			n.store.LearnCommitted(best)
		case <-t.C:
			for _, id := range failed {
				asked[id] = false
			}
			failed = failed[:0]
		}
	}
	if last := n.store.Status().LastLogIndex; best > last {
		n.log.Info("this agent's Raft log ends before an index a peer knows committed (it was down, or its data dir is an old copy): until a leader sends it the rest it votes only for candidates that hold those writes",
			"last_log_index", last, "committed", best, "told_by", from)
	}
}

// answer is a peer's CommitSeen, or why it gave none.
type answer struct {
	id     string
	commit uint64
	err    error
}

// peerGRPCAddr is where the Raft server id serves gRPC, as the replica or
// gossip knows it; "" when neither does.
func (n *Node) peerGRPCAddr(id string) string {
	if addr := n.store.FSM().Node(id).GetGrpcAddress(); addr != "" {
		return addr
	}
	if g := n.gossip(); g != nil {
		if m, ok := g.LastKnown(id); ok {
			return m.Meta.GRPCAddr
		}
	}
	return ""
}
