package raftstore

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// A voter whose disk was replaced, or whose data dir was wiped, comes
// back under its old name and address with no Raft state at all, and its
// peers still count it as a voter. hashicorp/raft grants its vote to any
// candidate while it has no configuration, whatever the candidate's log
// holds. Its old vote, and its old copy of the log, may be what made a
// write committed: with the leader down and the third voter lagging, the
// wiped voter would elect the laggard, and the writes the two of them
// acknowledged before the disk was lost would be overwritten.
//
// The vote gate in front of raft refuses such votes. A replica with no
// log and no snapshot answers a vote request (or pre-vote) from a
// candidate whose log goes past the bootstrap configuration (index 1)
// with an error instead of passing it to raft: that cluster has had a
// leader and may hold acknowledged writes this replica cannot vouch for.
// It votes again once a leader has sent it the log. Candidates whose log
// is only the bootstrap configuration still get its vote: agents of a
// bootstrap_expect cluster that left the bootstrap to one of them
// (node/cluster.go) elect the first leader that way, and such a cluster
// has nothing to lose yet.
//
// The cost is availability, never data: a cluster whose leader dies
// while a voter added a moment before has not yet received the log waits
// for the leader to come back, where raft alone would elect without it.

// bootstrapIndex is the index of the configuration entry BootstrapCluster
// writes: a log that ends there has never had a leader.
const bootstrapIndex = 1

// errNoStateNoVote is what a candidate is told by a replica that has no
// Raft state.
var errNoStateNoVote = errors.New("this agent has no Raft state (a new, wiped or replaced data dir) and votes only once a leader has sent it the log")

// voteGate decides whether this replica may pass a vote request to raft.
type voteGate struct {
	hasState func() (bool, error) // whether the log or a snapshot holds anything
	known    atomic.Bool          // hasState was once true: it stays so
	log      hclog.Logger
	refused  atomic.Uint64 // vote requests refused, for the warning's count
}

// newVoteGate returns the gate of a replica whose log is logs and whose
// snapshots are snaps.
func newVoteGate(logs raft.LogStore, snaps raft.SnapshotStore, log hclog.Logger) *voteGate {
	return &voteGate{
		log: log,
		hasState: func() (bool, error) {
			last, err := logs.LastIndex()
			if err != nil || last > 0 {
				return last > 0, err
			}
			metas, err := snaps.List()
			return len(metas) > 0, err
		},
	}
}

// refuse returns the error to answer rpc with, or nil to pass it to raft.
func (g *voteGate) refuse(rpc raft.RPC) error {
	var candidate []byte
	var lastIndex uint64
	switch req := rpc.Command.(type) {
	case *raft.RequestVoteRequest:
		candidate, lastIndex = req.ID, req.LastLogIndex
	case *raft.RequestPreVoteRequest:
		candidate, lastIndex = req.ID, req.LastLogIndex
	default:
		return nil
	}
	if g == nil || lastIndex <= bootstrapIndex || g.known.Load() {
		return nil
	}
	has, err := g.hasState()
	if err != nil {
		// Unreadable state is not proof of none: leave the vote to raft,
		// which reads the same log and fails loudly.
		g.log.Warn("could not tell whether this agent has Raft state; passing the vote request to raft", "error", err)
		return nil
	}
	if has {
		g.known.Store(true)
		return nil
	}
	if n := g.refused.Add(1); n == 1 || n%100 == 0 {
		g.log.Warn("refused a vote: this agent has no Raft state yet (new, wiped or replaced data dir), so it cannot tell which writes the cluster acknowledged; it votes once a leader has sent it the log",
			"candidate", string(candidate), "candidate_last_index", lastIndex, "refused", n)
	}
	return fmt.Errorf("vote refused: %w", errNoStateNoVote)
}
