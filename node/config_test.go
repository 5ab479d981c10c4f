package node

import (
	"testing"
	"time"

	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/raftstore"
	"github.com/zrpcio/zrpc/storage"
)

// TestDefaultTakesEachSubsystemsDefaults: every setting of a subsystem
// defaults to what that subsystem's package declares, so a default changed
// there is the agent's default too.
func TestDefaultTakesEachSubsystemsDefaults(t *testing.T) {
	d := Default()
	rd := raftstore.DefaultConfig()
	bd := storage.DefaultConfig()
	for _, tc := range []struct {
		key       string
		got, want any
	}{
		{"raft_heartbeat_timeout", d.RaftHeartbeatTimeout, rd.HeartbeatTimeout},
		{"raft_election_timeout", d.RaftElectionTimeout, rd.ElectionTimeout},
		{"raft_leader_lease_timeout", d.RaftLeaderLease, rd.LeaderLeaseTimeout},
		{"snapshot_threshold", d.SnapshotThreshold, rd.SnapshotThreshold},
		{"stale_read_bound", d.StaleReadBound, rd.StaleReadBound},
		{"blob_block_size", d.BlobBlockSize, bd.BlockSize},
		{"blob_max_size", d.BlobMaxSize, bd.MaxBlobSize},
		{"blob_repair_delay", d.BlobRepairDelay, bd.RepairDelay},
		{"blob_repair_interval", d.BlobRepairInterval, bd.RepairInterval},
		{"blob_orphan_grace", d.BlobOrphanGrace, bd.OrphanGrace},
		{"blob_gc_interval", d.BlobGCInterval, bd.GCInterval},
		{"blob_scrub_rate", d.BlobScrubRate, bd.ScrubRate},
		{"blob_scrub_interval", d.BlobScrubInterval, bd.ScrubInterval},
		{"gossip_profile", d.GossipProfile, string(gossip.DefaultProfile)},
		{"join_max_backoff", d.JoinMaxBackoff, gossip.DefaultJoinMaxBackoff},
	} {
		if tc.got != tc.want {
			t.Errorf("Default() %s = %v, its package's default is %v", tc.key, tc.got, tc.want)
		}
	}
}

// TestSubsystemConfigsCarryTheSettings: the configuration the agent hands
// each subsystem holds the settings as given, and the subsystem's own
// defaults for what the agent does not set.
func TestSubsystemConfigsCarryTheSettings(t *testing.T) {
	c := Default()
	c.Name = "a1"
	c.RaftHeartbeatTimeout, c.RaftElectionTimeout, c.RaftLeaderLease = 301*time.Millisecond, 302*time.Millisecond, 303*time.Millisecond
	c.SnapshotThreshold, c.StaleReadBound = 304, 305*time.Millisecond
	c.BlobBlockSize, c.BlobMaxSize, c.BlobScrubRate = 8192, 1<<30, 307
	c.BlobRepairDelay, c.BlobRepairInterval, c.BlobOrphanGrace = 308*time.Second, 309*time.Second, 310*time.Second
	c.BlobGCInterval, c.BlobScrubInterval = 311*time.Second, 312*time.Second
	want := raftstore.DefaultConfig()
	want.NodeID = c.Name
	want.HeartbeatTimeout = c.RaftHeartbeatTimeout
	want.ElectionTimeout = c.RaftElectionTimeout
	want.LeaderLeaseTimeout = c.RaftLeaderLease
	want.SnapshotThreshold = c.SnapshotThreshold
	want.StaleReadBound = c.StaleReadBound
	if got := c.raftConfig(); got.NodeID != want.NodeID || got.HeartbeatTimeout != want.HeartbeatTimeout ||
		got.ElectionTimeout != want.ElectionTimeout || got.LeaderLeaseTimeout != want.LeaderLeaseTimeout ||
		got.SnapshotThreshold != want.SnapshotThreshold || got.StaleReadBound != want.StaleReadBound ||
		got.CommitTimeout != want.CommitTimeout || got.ApplyTimeout != want.ApplyTimeout || got.WatchRing != want.WatchRing {
		t.Errorf("raftConfig() = %+v, want %+v", got, want)
	}
	wantBlob := storage.DefaultConfig()
	wantBlob.BlockSize = c.BlobBlockSize
	wantBlob.MaxBlobSize = c.BlobMaxSize
	wantBlob.RepairDelay = c.BlobRepairDelay
	wantBlob.RepairInterval = c.BlobRepairInterval
	wantBlob.OrphanGrace = c.BlobOrphanGrace
	wantBlob.GCInterval = c.BlobGCInterval
	wantBlob.ScrubRate = c.BlobScrubRate
	wantBlob.ScrubInterval = c.BlobScrubInterval
	if got := c.blobConfig(); got != wantBlob {
		t.Errorf("blobConfig() = %+v, want %+v", got, wantBlob)
	}
}
