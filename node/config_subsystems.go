package node

import (
	"github.com/zrpcio/zrpc/raftstore"
	"github.com/zrpcio/zrpc/storage"
)

// The settings of the agent's subsystems, copied between Config and each
// subsystem's own configuration in one place per direction: Default takes
// the subsystems' defaults through the set methods, the agent configures
// them through the others.

// raftConfig is the Raft store's part of the configuration; the agent adds
// its data directory, listener and test hooks.
func (c *Config) raftConfig() raftstore.Config {
	rc := raftstore.DefaultConfig()
	rc.NodeID = c.Name
	rc.HeartbeatTimeout = c.RaftHeartbeatTimeout
	rc.ElectionTimeout = c.RaftElectionTimeout
	rc.LeaderLeaseTimeout = c.RaftLeaderLease
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.StaleReadBound = c.StaleReadBound
	return rc
}

// setRaftConfig sets the settings raftConfig reads from rc.
func (c *Config) setRaftConfig(rc raftstore.Config) {
	c.RaftHeartbeatTimeout = rc.HeartbeatTimeout
	c.RaftElectionTimeout = rc.ElectionTimeout
	c.RaftLeaderLease = rc.LeaderLeaseTimeout
	c.SnapshotThreshold = rc.SnapshotThreshold
	c.StaleReadBound = rc.StaleReadBound
}

// blobConfig is the blob store's part of the configuration.
func (c *Config) blobConfig() storage.Config {
	bc := storage.DefaultConfig()
	bc.BlockSize = c.BlobBlockSize
	bc.MaxBlobSize = c.BlobMaxSize
	bc.RepairDelay = c.BlobRepairDelay
	bc.RepairInterval = c.BlobRepairInterval
	bc.OrphanGrace = c.BlobOrphanGrace
	bc.GCInterval = c.BlobGCInterval
	bc.ScrubRate = c.BlobScrubRate
	bc.ScrubInterval = c.BlobScrubInterval
	return bc
}

// setBlobConfig sets the settings blobConfig reads from bc.
func (c *Config) setBlobConfig(bc storage.Config) {
	c.BlobBlockSize = bc.BlockSize
	c.BlobMaxSize = bc.MaxBlobSize
	c.BlobRepairDelay = bc.RepairDelay
	c.BlobRepairInterval = bc.RepairInterval
	c.BlobOrphanGrace = bc.OrphanGrace
	c.BlobGCInterval = bc.GCInterval
	c.BlobScrubRate = bc.ScrubRate
	c.BlobScrubInterval = bc.ScrubInterval
}
