package raftstore

import (
	"slices"
	"strings"

	"github.com/hashicorp/raft"
)

// forgetRemovedPeers drops what the store keeps per peer for every peer
// not in the latest Raft configuration: when each was last heard
// (transport.go), and on a leader the commit pusher's senders
// (commitpush.go), the requests peers accepted (readindex.go) and the
// failed heartbeats. Most agents of a large cluster are nonvoters, dead
// ones are removed and may come back under new names: kept, their state
// would grow without bound.
//
// The contact monitor calls it at every look, on every store; it prunes
// once per change of the configuration's servers (raft's
// GetConfiguration leaves its Index unset, so the ids are compared). A
// request, or a failed heartbeat, of a removed peer's replication still
// ending may record the peer again after it is pruned; the next change
// forgets it. The caller holds s.contact.mu.
func (s *Store) forgetRemovedPeers() {
	f := s.raft.GetConfiguration()
	servers := f.Configuration().Servers
	if f.Error() != nil || len(servers) == 0 {
		return // no configuration yet
	}
	ids := make([]string, len(servers))
	for i, srv := range servers {
		ids[i] = string(srv.ID)
	}
	slices.Sort(ids)
	key := strings.Join(ids, "\x00")
	if key == s.contact.peersPruned {
		return
	}
	s.contact.peersPruned = key
	in := func(id string) bool { _, ok := slices.BinarySearch(ids, id); return ok }
	member := func(id raft.ServerID) bool { return in(string(id)) }
	s.pusher.retain(member)
	s.transport.acks.retain(member)
	s.heartbeats.retain(member)
	s.transport.peers.retain(in)
}
