package node

import (
	"reflect"

	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/raftstore"
	"github.com/zrpcio/zrpc/storage"
)

// The settings of the agent's subsystems. Each table below ties a setting
// (its YAML key) to the field of a subsystem's configuration it sets, once:
// the agent builds the subsystem's configuration from it, Default takes
// the subsystem's defaults through it, and Validate names the setting
// when the subsystem's Validate refuses the field.

// subsystemSetting ties one setting to one field of a subsystem's Config
// (the Go field name; the two fields' types convert).
type subsystemSetting struct {
	key, field string
}

// raftSettings are the settings of raftstore.Config.
var raftSettings = []subsystemSetting{
	{"raft_heartbeat_timeout", "HeartbeatTimeout"},
	{"raft_election_timeout", "ElectionTimeout"},
	{"raft_leader_lease_timeout", "LeaderLeaseTimeout"},
	{"snapshot_threshold", "SnapshotThreshold"},
	{"stale_read_bound", "StaleReadBound"},
	{"watch_ring_bytes", "WatchRingBytes"},
}

// blobSettings are the settings of storage.Config.
var blobSettings = []subsystemSetting{
	{"blob_block_size", "BlockSize"},
	{"blob_max_size", "MaxBlobSize"},
	{"blob_repair_delay", "RepairDelay"},
	{"blob_repair_interval", "RepairInterval"},
	{"blob_orphan_grace", "OrphanGrace"},
	{"blob_gc_interval", "GCInterval"},
	{"blob_scrub_rate", "ScrubRate"},
	{"blob_scrub_interval", "ScrubInterval"},
	{"blob_put_lease", "PutLease"},
}

// gossipErrorKeys maps the fields gossip.Config.Validate names to the
// settings that set them (see gossipConfig).
var gossipErrorKeys = map[string]string{
	"name":           "name",
	"meta":           "name", // gossipConfig's meta holds only the name
	"bind_addr":      "bind",
	"bind_port":      "gossip_port",
	"advertise_addr": "advertise",
	"profile":        "gossip_profile",
}

// settingKeys maps a table's subsystem fields to their settings.
func settingKeys(table []subsystemSetting) map[string]string {
	m := make(map[string]string, len(table))
	for _, s := range table {
		m[s.field] = s.key
	}
	return m
}

// toSubsystem copies the table's settings into the subsystem
// configuration sub points to.
func (c *Config) toSubsystem(sub any, table []subsystemSetting) {
	src, dst := reflect.ValueOf(c).Elem(), reflect.ValueOf(sub).Elem()
	for _, s := range table {
		f := dst.FieldByName(s.field)
		f.Set(settingField(src, s.key).Convert(f.Type()))
	}
}

// fromSubsystem sets the table's settings from the subsystem
// configuration sub points to.
func (c *Config) fromSubsystem(sub any, table []subsystemSetting) {
	dst, src := reflect.ValueOf(c).Elem(), reflect.ValueOf(sub).Elem()
	for _, s := range table {
		f := settingField(dst, s.key)
		f.Set(src.FieldByName(s.field).Convert(f.Type()))
	}
}

// settingField is the field of v (a Config) that holds the setting key.
// The tables above name only declared settings (a test checks each).
func settingField(v reflect.Value, key string) reflect.Value {
	s, ok := SettingByKey(key)
	if !ok {
		panic("node: subsystem table names no setting " + key)
	}
	return v.Field(s.index)
}

// raftConfig is the Raft store's part of the configuration; the agent adds
// its data directory, listener and test hooks.
func (c *Config) raftConfig() raftstore.Config {
	rc := raftstore.DefaultConfig()
	rc.NodeID = c.Name
	rc.VoteHold = voteHold // learnCommitted ends it
	c.toSubsystem(&rc, raftSettings)
	return rc
}

// blobConfig is the blob store's part of the configuration.
func (c *Config) blobConfig() storage.Config {
	bc := storage.DefaultConfig()
	c.toSubsystem(&bc, blobSettings)
	return bc
}

// gossipConfig is gossip's part of the configuration; the agent adds its
// meta, key, callbacks and test hooks.
func (c *Config) gossipConfig() gossip.Config {
	return gossip.Config{
		Name:          c.Name,
		BindAddr:      c.BindAddr,
		BindPort:      c.GossipPort,
		AdvertiseAddr: c.AdvertiseAddr,
		Profile:       gossip.Profile(c.GossipProfile),
	}
}
