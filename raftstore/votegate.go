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
// A log can go past the commit index and still lack committed entries:
// a laggard that led a term of its own while cut off wrote a tail no one
// else has, and the others then committed entries of a later term at the
// same indexes. Raft weighs last terms first, and a wiped voter whose
// part of the log is of older terms would grant it the vote. So when a
// leader's request names the term of the entry at its commit index (its
// PrevLogEntry, or one of its entries), the gate also refuses candidates
// whose log ends in an earlier term: a log holding a committed entry of
// term T ends in T or later.
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
//
// What a leader told a wiped voter must survive the voter's restart: once
// it has part of the log it opens with Raft state, and with the old
// leader down the only peer to answer may be the laggard, whose
// CommitSeen is below what the voter's old acknowledgements committed.
// So the gate keeps in the stable store (raft-wal's wal-meta.db, bbolt
// commits, fsynced) the highest commit index it knows, and that term,
// whenever raft
// is about to store entries or a snapshot while that index lies past the
// log, either as it is (a crash in the middle of the store leaves it so)
// or as the request leaves it (a conflicting tail cut off). The write
// comes before raft sees the request, so before the log first holds
// anything (the state that ends the refusal of a replica with none) and
// before any entry is acknowledged; a request the gate cannot record the
// index for is answered with an error and the leader sends it again.
// Open loads them as the floor (loadFloor). They are cleared once the
// replica has applied up to it: its log then holds those entries, and
// raft's own comparison of logs refuses candidates that lack them.
//
// A replica whose log reaches every commit index leaders sent it writes
// nothing: the index a leader sends is at most the last entry of its
// request (matchedcommit.go), so the requests of a follower in step,
// even a slow one, never lie past its log. Only the requests that do not
// match it (a leader that believes the replica holds entries it has
// lost: a wiped or restored data dir, a replica that was down) reveal an
// index past it, and the write happens once, at the next request that
// brings entries. The index learned before the request is kept, not the
// request's own: raft stores a request's entries before it acknowledges
// them, so its own index needs no record.

// commitFloorKey and commitFloorTermKey are the stable-store keys of the
// commit index kept while the log ends before it, and of the highest term
// of a committed entry known with it (0: none).
var (
	commitFloorKey     = []byte("ZrpcCommitFloor")
	commitFloorTermKey = []byte("ZrpcCommitFloorTerm")
)

// committedEntry is what the gate knows committed: an index, and the
// highest term of a committed entry (0: none known).
type committedEntry struct{ index, term uint64 }

// committedEntry returns what the gate knows committed.
func (g *voteGate) committedEntry() committedEntry {
	if g == nil {
		return committedEntry{}
	}
	return committedEntry{g.commitIndex(), g.commitTerm()}
}

// commitTerm is the highest term of an entry the gate knows committed:
// named with its term by a leader's request since the agent started, or
// kept from before a restart.
func (g *voteGate) commitTerm() uint64 {
	term := g.floorTerm.Load()
	if g.committedTerm != nil {
		term = max(term, g.committedTerm())
	}
	return term
}

// commitIndex is the highest index the gate knows committed: sent by a
// leader since the agent started, told by its peers, or kept from before
// a restart.
func (g *voteGate) commitIndex() uint64 {
	if g == nil {
		return 0
	}
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
	// this agent since it started, and committedTerm the highest term of
	// a committed entry its requests named with its term.
	committed     func() uint64
	committedTerm func() uint64
	// floor is the highest commit index the agent's peers told it of
	// (LearnCommitted); heldUntil, while in the future (internal/monotime), holds
	// every vote until they have.
	floor     atomic.Uint64
	floorTerm atomic.Uint64 // kept from before a restart (loadFloor)
	heldUntil atomic.Int64
	log       hclog.Logger
	refused   atomic.Uint64 // vote requests refused, for the warning's count

	// stable, when set, keeps the commit index across restarts (keep);
	// lastIndex is the log's last index and applied the replica's last
	// applied index. saved is what is kept there; only the transport's
	// forward goroutine writes it once the store is open.
	stable    raft.StableStore
	lastIndex func() (uint64, error)
	applied   func() uint64
	saved     atomic.Pointer[committedEntry]
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

// loadFloor raises the floor to the commit index kept in the stable store
// before a restart.
func (g *voteGate) loadFloor() error {
	if g == nil || g.stable == nil {
		return nil
	}
	var saved committedEntry
	var err error
	if saved.index, err = g.stable.GetUint64(commitFloorKey); err == nil {
		saved.term, err = g.stable.GetUint64(commitFloorTermKey)
	}
	if err != nil {
		return fmt.Errorf("read the commit index kept in the Raft stable store: %w", err)
	}
	g.saved.Store(&saved)
	if saved == (committedEntry{}) {
		return nil
	}
	g.learn(saved.index)
	g.floorTerm.Store(saved.term)
	g.log.Info("a leader told this agent, before it restarted, of committed entries its Raft log may not hold yet: it votes only for candidates whose log reaches them",
		"committed", saved.index, "committed_term", saved.term)
	return nil
}

// savedEntry is what is kept in the stable store.
func (g *voteGate) savedEntry() committedEntry {
	if p := g.saved.Load(); p != nil {
		return *p
	}
	return committedEntry{}
}

// keep records in the stable store told, what the gate knew committed
// before rpc arrived, when rpc brings entries or a snapshot and told's
// index lies past the log as it is or as rpc leaves it; it clears the
// record once the replica has applied up to it. An error means told could
// not be recorded: rpc must not reach raft.
func (g *voteGate) keep(rpc raft.RPC, told committedEntry) error {
	if g == nil || g.stable == nil {
		return nil
	}
	var upTo uint64 // the log's last index once raft has stored what rpc brings
	switch req := rpc.Command.(type) {
	case *raft.AppendEntriesRequest:
		n := len(req.Entries)
		if n == 0 {
			g.clearReached()
			return nil
		}
		upTo = req.Entries[n-1].Index
	case *raft.InstallSnapshotRequest:
		upTo = req.LastLogIndex
	default:
		return nil
	}
	if saved := g.savedEntry(); told.index <= saved.index && told.term <= saved.term {
		g.clearReached()
		return nil
	}
	last, err := g.lastIndex()
	if err != nil {
		return fmt.Errorf("this agent could not read its Raft log's last index, so it stores no entries: %w", err)
	}
	if told.index <= min(last, upTo) {
		return nil
	}
	if err := g.save(told); err != nil {
		return fmt.Errorf("this agent could not record in its Raft stable store the commit index %d a leader told it, and stores no entries before it has (check its disk): %w", told.index, err)
	}
	return nil
}

// save keeps e in the stable store (keepCommitted).
func (g *voteGate) save(e committedEntry) error {
	if err := keepCommitted(g.stable, e); err != nil {
		return err
	}
	g.saved.Store(&e)
	return nil
}

// keepCommitted writes e to stable, the term first: either alone is a
// true bound should the second write not happen. The zero e clears it.
func keepCommitted(stable raft.StableStore, e committedEntry) error {
	if err := stable.SetUint64(commitFloorTermKey, e.term); err != nil {
		return err
	}
	return stable.SetUint64(commitFloorKey, e.index)
}

// clearReached clears the kept commit index once the replica has applied
// up to it; a failure is logged, as the record only refuses candidates
// that could never lead rightfully.
func (g *voteGate) clearReached() {
	saved := g.savedEntry()
	if saved == (committedEntry{}) || g.applied() < saved.index {
		return
	}
	if err := g.save(committedEntry{}); err != nil {
		g.log.Warn("could not clear the commit index kept in the Raft stable store; it is cleared at the next request", "committed", saved.index, "error", err)
	}
}

// refuse returns the error to answer rpc with, or nil to pass it to raft.
func (g *voteGate) refuse(rpc raft.RPC) error {
	var candidate []byte
	var lastIndex, lastTerm uint64
	switch req := rpc.Command.(type) {
	case *raft.RequestVoteRequest:
		candidate, lastIndex, lastTerm = req.ID, req.LastLogIndex, req.LastLogTerm
	case *raft.RequestPreVoteRequest:
		candidate, lastIndex, lastTerm = req.ID, req.LastLogIndex, req.LastLogTerm
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
	if term := g.commitTerm(); lastTerm < term {
		// A log that holds a committed entry of term T ends in T or later.
		if n := g.refused.Add(1); n == 1 || n%100 == 0 {
			g.log.Warn("refused a vote: the candidate's log ends in a term before that of an entry this agent knows committed, so it lacks acknowledged writes",
				"candidate", string(candidate), "candidate_last_term", lastTerm, "committed_term", term, "refused", n)
		}
		return fmt.Errorf("vote refused: %w (its log ends in term %d, an entry of term %d is committed)", errBehindCommit, lastTerm, term)
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
