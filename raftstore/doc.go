// Package raftstore is the agent's replicated registry: a hashicorp/raft node
// whose state machine (FSM) holds nodes, service instances and sessions, with
// the Raft log and stable store kept in hashicorp/raft-wal (logstore.go;
// an agent's raft.db from before it is migrated at start, migrate.go) and
// snapshots in raft's FileSnapshotStore.
//
// Every committed entry's Raft index is the registry revision. Watchers are
// served from an in-memory ring of recent events, ordered by revision and
// resumable; a watcher whose revision has left the ring gets a snapshot of
// the current state first.
//
// The cluster API (Servers, AddVoter, RemoveServer, TransferLeadership,
// Status) is the only way to the Raft engine: callers never see it.
//
// Writes must be proposed on the leader; Store.Apply returns ErrNotLeader
// elsewhere. A Forwarder runs them on the leader: locally when this store
// leads, through the leader's Internal.Apply otherwise. raftstore knows
// gRPC only as the client of that call (the agent supplies the dialer and
// its credentials); it knows nothing of gossip or health checking.
package raftstore

import "github.com/zrpcio/zrpc/api/apierr"

// Errors returned by the store; they are the API's sentinels so that they
// keep their meaning across the wire.
var (
	ErrNotLeader       = apierr.ErrNotLeader
	ErrNoLeader        = apierr.ErrNoLeader
	ErrNotFound        = apierr.ErrNotFound
	ErrStaleRead       = apierr.ErrStaleRead
	ErrInvalidArgument = apierr.ErrInvalidArgument
	ErrSessionRequired = apierr.ErrSessionRequired
	ErrShuttingDown    = apierr.ErrShuttingDown
	ErrAlreadyExists   = apierr.ErrAlreadyExists
)
