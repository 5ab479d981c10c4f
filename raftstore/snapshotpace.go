package raftstore

import (
	"context"
	"math/bits"
	"time"
)

// snapshotShare is the share of the registry's instances that may pass
// in the log before a snapshot: SnapshotThreshold entries, or a
// sixteenth of the instances if that is more (from 131,072 instances on,
// with the default threshold).
const snapshotShare = 16

// PaceSnapshots keeps raft's snapshot threshold in step with the
// registry's size until ctx ends, checking every SnapshotInterval. A
// snapshot writes every instance, so with a fixed threshold each entry
// of a large registry costs a large share of one (a million instances
// every 8,192 entries is 122 instances encoded per write, and a snapshot
// always under way); with a sixteenth of the instances each entry costs
// sixteen at most, and a restart replays at most a sixteenth of the
// registry on top of restoring it. The threshold is a power of two, so that it
// changes rarely.
func (s *Store) PaceSnapshots(ctx context.Context) {
	t := time.NewTicker(s.cfg.SnapshotInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		want := snapshotThreshold(s.cfg.SnapshotThreshold, s.fsm.InstanceCount())
		rc := s.raft.ReloadableConfig()
		if rc.SnapshotThreshold == want {
			continue
		}
		rc.SnapshotThreshold = want
		if err := s.raft.ReloadConfig(rc); err != nil {
			s.log.Warn("could not set the snapshot threshold", "threshold", want, "err", err)
		}
	}
}

// snapshotThreshold is floor, or the power of two at or above a
// sixteenth of instances when that is more.
func snapshotThreshold(floor uint64, instances int) uint64 {
	share := uint64(instances) / snapshotShare
	if share <= floor {
		return floor
	}
	return 1 << bits.Len64(share-1)
}
