package raftstore

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/internal/monotime"
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
// while a voter wiped a moment before has not yet received the log waits
// for the leader to come back, where raft alone would elect without it.
// (A new agent becomes a voter only once it has the log: node's
// reconciler.)
//
// Once the wiped voter has received part of the log it has state, and
// raft compares the candidate's log with that part only: a laggard whose
// log is longer than the part gets the vote. So the gate also refuses
// any candidate whose log ends before the highest commit index a leader
// has sent this agent since it started (the transport records it from
// AppendEntries requests, transport.go). An entry once committed is in
// the log of every later leader, so such a candidate can never be a
// rightful leader, and refusing it costs nothing; for a voter whose own
// log reaches that index raft refuses the candidate anyway. It protects
// a wiped voter from the first AppendEntries it receives, and a voter
// whose data dir was restored from an old copy from the first one after
// its restart.
//
// Before that first AppendEntries, nothing on a restored agent can tell,
// but its peers can: a leader may be gone for good, and the peers' own
// knowledge of the commit index is then all there is. An agent that
// restarts with Raft state therefore holds its votes (Config.VoteHold)
// while it asks its peers which index they know committed (their
// CommitSeen, node/commitfloor.go), raises the gate's floor to the
// highest answer (LearnCommitted) and votes again (ReleaseVotes). A
// commit index comes only from a leader that committed it, so a floor
// learned from anyone is safe: it can only refuse candidates that could
// never be rightful leaders. Were the peers, too, restarted and never
// told, the floor stays where the agent's own log puts it.

// commitIndex is the highest index the gate knows committed: sent by a
// leader since the agent started, or told by its peers.
func (g *voteGate) commitIndex() uint64 {
	commit := g.floor.Load()
	if g.committed != nil {
		commit = max(commit, g.committed())
	}
	return commit
}

// learn raises the floor to index.
func (g *voteGate) learn(index uint64) {
	for {
		cur := g.floor.Load()
		if index <= cur || g.floor.CompareAndSwap(cur, index) {
			return
		}
	}
}

// bootstrapIndex is the index of the configuration entry BootstrapCluster
// writes: a log that ends there has never had a leader.
const bootstrapIndex = 1

// errNoStateNoVote is what a candidate is told by a replica that has no
// Raft state.
var errNoStateNoVote = errors.New("this agent has no Raft state (a new, wiped or replaced data dir) and votes only once a leader has sent it the log")

// errVotesHeld is what a candidate is told while this agent, just
// restarted, asks its peers what is committed.
var errVotesHeld = errors.New("this agent has just restarted and asks its peers which writes are committed before it votes")

// errBehindCommit is what a candidate whose log ends before an index a
// leader has told this agent is committed is told.
var errBehindCommit = errors.New("the candidate's log lacks entries this agent knows are committed")

// voteGate decides whether this replica may pass a vote request to raft.
type voteGate struct {
	hasState func() (bool, error) // whether the log or a snapshot holds anything
	known    atomic.Bool          // hasState was once true: it stays so
	// committed, when set, is the highest commit index a leader has sent
	// this agent since it started.
	committed func() uint64
	// floor is the highest commit index the agent's peers told it of
	// (LearnCommitted); heldUntil, while in the future (internal/monotime), holds
	// every vote until they have.
	floor     atomic.Uint64
	heldUntil atomic.Int64
	log       hclog.Logger
	refused   atomic.Uint64 // vote requests refused, for the warning's count
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
	if g == nil {
		return nil
	}
	if until := g.heldUntil.Load(); until != 0 && monotime.Now() < until {
		return fmt.Errorf("vote refused for now: %w", errVotesHeld)
	}
	if commit := g.commitIndex(); lastIndex < commit {
		if n := g.refused.Add(1); n == 1 || n%100 == 0 {
			g.log.Warn("refused a vote: the candidate's log ends before an index this agent knows committed, so it lacks acknowledged writes",
				"candidate", string(candidate), "candidate_last_index", lastIndex, "committed", commit, "refused", n)
		}
		return fmt.Errorf("vote refused: %w (its log ends at index %d, committed goes to %d)", errBehindCommit, lastIndex, commit)
	}
	if lastIndex <= bootstrapIndex || g.known.Load() {
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
