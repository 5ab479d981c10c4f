package raftstore

import "github.com/hashicorp/raft"

// A follower may commit only entries an AppendEntries request has shown
// to match the leader's log: through the request's last entry, or its
// PrevLogEntry when it carries none (the Raft paper: commitIndex =
// min(leaderCommit, index of last new entry)). hashicorp/raft's follower
// takes min(LeaderCommitIndex, its own last index) instead, and its own
// log may go on past the request with entries of an older term that no
// leader committed: a leader deposed before it could replicate them (it
// was stopped, or cut off) keeps them until the new leader's entries
// overwrite them. Its leader, in turn, reads the last index it will send
// before it reads its commit index, and a commit that moves on in between
// gives a request without entries whose commit index is past its
// PrevLogEntry. The new leader's first such request to the deposed one
// then had it commit and apply its own stale entries: its registry
// diverged from every other replica's, and its watchers saw writes at
// revisions where the cluster has others.
//
// The store therefore lowers the commit index of every AppendEntries
// request to the index the request matched, on both sides: as a leader
// before it sends one, and as a follower before raft sees one (a leader of
// an older build may still send one). The follower commits the rest with
// the next request that carries those entries, or with the commit push
// (commitpush.go), whose commit index is its PrevLogEntry. Heartbeats
// carry no commit index and are left as they are.

// matchedCommit lowers req's commit index to the last index it matched.
func matchedCommit(req *raft.AppendEntriesRequest) {
	matched := req.PrevLogEntry
	if n := len(req.Entries); n > 0 {
		matched = req.Entries[n-1].Index
	}
	req.LeaderCommitIndex = min(req.LeaderCommitIndex, matched)
}
