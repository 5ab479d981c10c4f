package raftstore

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/fielderr"
)

// TestConfigValidateNamesEachBadField: DefaultConfig is valid, and each
// value out of bounds is refused as a problem of its own field.
func TestConfigValidateNamesEachBadField(t *testing.T) {
	d := DefaultConfig()
	if err := d.Validate(); err != nil {
		t.Fatalf("DefaultConfig is invalid: %v", err)
	}
	for _, tc := range []struct {
		field string
		set   func(*Config)
	}{
		{"HeartbeatTimeout", func(c *Config) { c.HeartbeatTimeout = 0 }},
		{"ElectionTimeout", func(c *Config) { c.ElectionTimeout = -1 }},
		{"LeaderLeaseTimeout", func(c *Config) { c.LeaderLeaseTimeout = 0 }},
		{"LeaderLeaseTimeout", func(c *Config) { c.LeaderLeaseTimeout = c.HeartbeatTimeout + 1 }},
		{"CommitTimeout", func(c *Config) { c.CommitTimeout = 0 }},
		{"ApplyTimeout", func(c *Config) { c.ApplyTimeout = 0 }},
		{"StaleReadBound", func(c *Config) { c.StaleReadBound = 0 }},
		{"SnapshotThreshold", func(c *Config) { c.SnapshotThreshold = MinSnapshotThreshold - 1 }},
		{"RetainSnapshots", func(c *Config) { c.RetainSnapshots = 0 }},
		{"WatchRing", func(c *Config) { c.WatchRing = 0 }},
	} {
		c := DefaultConfig()
		tc.set(&c)
		probs := fielderr.Split(c.Validate())
		if len(probs) != 1 || probs[0].Field != tc.field {
			t.Errorf("bad %s: Validate reported %v, want one problem of %s", tc.field, probs, tc.field)
		}
	}
}

// With the default snapshot interval, a burst of writes past the
// threshold is snapshotted soon after it, with no further writes, so a
// restart replays little of it: raft checks the threshold once per
// SnapshotInterval to twice that.
func TestStoreDefaultIntervalSnapshotsABurst(t *testing.T) {
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelInfo)
	cfg.SnapshotThreshold = MinSnapshotThreshold
	s := openStore(t, New(cfg))
	for i := range 2 * MinSnapshotThreshold {
		mustStoreApply(t, s, registerCmd(testInstance("api", fmt.Sprint(i), "n1")))
	}
	eventually(t, 30*time.Second, "a snapshot of the burst", func() bool {
		return s.raft.Stats()["last_snapshot_index"] != "0"
	})
}
