package storage

import (
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/fielderr"
)

// TestConfigValidateNamesEachBadField: DefaultConfig is valid, and each
// value out of bounds is refused as a problem of its own field.
func TestConfigValidateNamesEachBadField(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig is invalid: %v", err)
	}
	for _, tc := range []struct {
		field string
		set   func(*Config)
	}{
		{"BlockSize", func(c *Config) { c.BlockSize = MinBlockSize - 1 }},
		{"BlockSize", func(c *Config) { c.BlockSize = MaxBlockSize + 1 }},
		{"InlineMax", func(c *Config) { c.InlineMax = 2 << 20 }},
		{"MaxMetadataBytes", func(c *Config) { c.MaxMetadataBytes = MaxMetadataBytes + 1 }},
		{"MaxBlobSize", func(c *Config) { c.MaxBlobSize = 0 }},
		{"PutInflight", func(c *Config) { c.PutInflight = 0 }},
		{"RepairWorkers", func(c *Config) { c.RepairWorkers = -1 }},
		{"ScrubRate", func(c *Config) { c.ScrubRate = -1 }},
		{"ShardTimeout", func(c *Config) { c.ShardTimeout = 0 }},
		{"RepairDelay", func(c *Config) { c.RepairDelay = -time.Second }},
		{"GCInterval", func(c *Config) { c.GCInterval = 0 }},
		{"ScrubInterval", func(c *Config) { c.ScrubInterval = 0 }},
		{"PutLease", func(c *Config) { c.PutLease = MinPutLease - 1 }},
		{"PutLease", func(c *Config) { c.PutLease = MaxPutLease + 1 }},
	} {
		c := DefaultConfig()
		tc.set(&c)
		probs := fielderr.Split(c.Validate())
		if len(probs) != 1 || probs[0].Field != tc.field {
			t.Errorf("bad %s: Validate reported %v, want one problem of %s", tc.field, probs, tc.field)
		}
	}
}
