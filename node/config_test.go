package node

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/internal/fielderr"
	"github.com/zrpcio/zrpc/internal/testwait"
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
		{"blob_put_lease", d.BlobPutLease, bd.PutLease},
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
	c.BlobPutLease = 313 * time.Second
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
	wantBlob.PutLease = c.BlobPutLease
	if got := c.blobConfig(); !reflect.DeepEqual(got, wantBlob) {
		t.Errorf("blobConfig() = %+v, want %+v", got, wantBlob)
	}
}

// TestSubsystemTablesNameSettingsAndFields: every row of the subsystem
// tables ties a declared setting to a field of the subsystem's Config of a
// type it converts to and from.
func TestSubsystemTablesNameSettingsAndFields(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sub   reflect.Type
		table []subsystemSetting
	}{
		{"raftstore", reflect.TypeFor[raftstore.Config](), raftSettings},
		{"storage", reflect.TypeFor[storage.Config](), blobSettings},
	} {
		for _, s := range tc.table {
			set, ok := SettingByKey(s.key)
			if !ok {
				t.Errorf("%s table: %s is not a setting", tc.name, s.key)
				continue
			}
			f, ok := tc.sub.FieldByName(s.field)
			if !ok {
				t.Errorf("%s table: %s.Config has no field %s", tc.name, tc.name, s.field)
				continue
			}
			own := reflect.TypeFor[Config]().Field(set.index).Type
			if !own.ConvertibleTo(f.Type) || !f.Type.ConvertibleTo(own) {
				t.Errorf("%s table: %s (%s) and %s (%s) do not convert", tc.name, s.key, own, s.field, f.Type)
			}
		}
	}
	for field, key := range gossipErrorKeys {
		if _, ok := SettingByKey(key); !ok {
			t.Errorf("gossip field %s maps to %s, which is not a setting", field, key)
		}
	}
}

// TestConfigValidateNamesTheSetting: each bad value is refused with the
// setting's YAML key in the message, whether the agent or a subsystem
// holds the bound.
func TestConfigValidateNamesTheSetting(t *testing.T) {
	for _, tc := range []struct {
		key string
		set func(*Config)
	}{
		{"name", func(c *Config) { c.Name = "" }},
		{"data_dir", func(c *Config) { c.DataDir = " " }},
		{"bind", func(c *Config) { c.BindAddr = "nowhere" }},
		{"advertise", func(c *Config) { c.AdvertiseAddr = "nowhere" }},
		{"grpc_port", func(c *Config) { c.GRPCPort = 70000 }},
		{"gossip_port", func(c *Config) { c.GossipPort = -1 }},
		{"zone", func(c *Config) { c.Zone = "a zone" }},
		{"log_level", func(c *Config) { c.LogLevel = "loud" }},
		{"log_format", func(c *Config) { c.LogFormat = "xml" }},
		{"voters", func(c *Config) { c.Voters = 6 }},
		{"bootstrap_expect", func(c *Config) { c.BootstrapExpect = 4 }},
		{"join", func(c *Config) { c.Join = []string{"not a name:8402"} }},
		{"join", func(c *Config) { c.Join = []string{"zrpc.default.svc:0"} }},
		{"gossip_profile", func(c *Config) { c.GossipProfile = "wan" }},
		{"gossip_profile", func(c *Config) { c.GossipProfile = "" }},
		{"encrypt", func(c *Config) { c.EncryptKey = "short" }},
		{"cluster_token", func(c *Config) { c.ClusterToken = "too-short" }},
		{"cluster_token_file", func(c *Config) {
			c.ClusterToken, c.ClusterTokenFile = strings.Repeat("t", 40), "/etc/zrpc/token"
		}},
		{"cluster_token", func(c *Config) {
			c.ClusterToken, c.TLSCA, c.TLSCert, c.TLSKey = strings.Repeat("t", 40), "ca.pem", "n1.pem", "n1-key.pem"
		}},
		{"dead_node_reap", func(c *Config) { c.DeadNodeReap = time.Millisecond }},
		{"non_voter", func(c *Config) { c.NonVoter, c.BootstrapExpect = true, 3 }},
		{"join_max_backoff", func(c *Config) { c.JoinMaxBackoff = 0 }},
		{"join_max_backoff", func(c *Config) { c.JoinMaxBackoff = time.Millisecond }},
		{"leader_wait", func(c *Config) { c.LeaderWait = 0 }},
		{"health_interval", func(c *Config) { c.HealthInterval = -time.Second }},
		{"raft_heartbeat_timeout", func(c *Config) { c.RaftHeartbeatTimeout = 0 }},
		{"raft_election_timeout", func(c *Config) { c.RaftElectionTimeout = 0 }},
		{"raft_election_timeout", func(c *Config) { c.RaftElectionTimeout = time.Nanosecond }},
		{"raft_election_timeout", func(c *Config) { c.RaftElectionTimeout = c.RaftHeartbeatTimeout - time.Millisecond }},
		{"raft_heartbeat_timeout", func(c *Config) { c.RaftHeartbeatTimeout = time.Millisecond }},
		{"raft_leader_lease_timeout", func(c *Config) { c.RaftLeaderLease = c.RaftHeartbeatTimeout + 1 }},
		{"snapshot_threshold", func(c *Config) { c.SnapshotThreshold = 15 }},
		{"stale_read_bound", func(c *Config) { c.StaleReadBound = 0 }},
		{"blob_block_size", func(c *Config) { c.BlobBlockSize = 4095 }},
		{"blob_block_size", func(c *Config) { c.BlobBlockSize = storage.MaxBlockSize + 1 }},
		{"blob_max_size", func(c *Config) { c.BlobMaxSize = 0 }},
		{"shard_max_bytes", func(c *Config) { c.ShardMaxBytes = -1 }},
		{"blob_repair_delay", func(c *Config) { c.BlobRepairDelay = 0 }},
		{"blob_repair_interval", func(c *Config) { c.BlobRepairInterval = 0 }},
		{"blob_orphan_grace", func(c *Config) { c.BlobOrphanGrace = 0 }},
		{"blob_gc_interval", func(c *Config) { c.BlobGCInterval = 0 }},
		{"blob_scrub_rate", func(c *Config) { c.BlobScrubRate = -1 }},
		{"blob_scrub_interval", func(c *Config) { c.BlobScrubInterval = 0 }},
		{"blob_put_lease", func(c *Config) { c.BlobPutLease = 100 * time.Millisecond }},
		{"max_instances_per_service", func(c *Config) { c.MaxInstancesPerService = -1 }},
		{"max_registry_bytes", func(c *Config) { c.MaxRegistryBytes = -1 }},
		{"watch_queue_bytes", func(c *Config) { c.WatchQueueBytes = -1 }},
		{"memory_limit", func(c *Config) { c.MemoryLimit = -2 }},
		{"watch_ring_bytes", func(c *Config) { c.WatchRingBytes = 1000 }},
		{"memory_limit", func(c *Config) { c.MemoryLimit = 1 << 20 }},
		{"snapshot_interval", func(c *Config) { c.SnapshotInterval = 30 * time.Second }},
		{"snapshot_interval", func(c *Config) { c.SnapshotInterval = -time.Hour }},
		{"snapshot_retain", func(c *Config) { c.SnapshotRetain = 0 }},
		{"tls_key", func(c *Config) { c.TLSCA, c.TLSCert = "ca.pem", "n1.pem" }},
		{"dns_port", func(c *Config) { c.DNSPort = 65536 }},
		{"dns_port", func(c *Config) { c.DNSPort = c.HTTPPort }},
		{"dns_bind", func(c *Config) { c.DNSBind = "localhost" }},
		{"dns_domain", func(c *Config) { c.DNSDomain = "." }},
		{"dns_domain", func(c *Config) { c.DNSDomain = "my zone" }},
		{"dns_ttl", func(c *Config) { c.DNSTTL = -time.Second }},
		{"dns_token", func(c *Config) { c.DNSToken = "not-a-secret" }},
		{"dns_token_file", func(c *Config) { c.DNSToken, c.DNSTokenFile = testDNSToken, "dns.token" }},
		{"tls_ca", func(c *Config) { c.TLSCert, c.TLSKey = "n1.pem", "n1-key.pem" }},
	} {
		c := Default()
		tc.set(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.key+":") {
			t.Errorf("bad %s: Validate = %v, want an error naming %s", tc.key, err, tc.key)
			continue
		}
		if n := len(fielderr.Split(err)); n != 1 {
			t.Errorf("bad %s: Validate reported %d problems, want 1:\n%v", tc.key, n, err)
		}
	}
}

// TestConfigValidateTakesTheSubsystemsBounds: a subsystem setting is
// refused by the agent exactly when the subsystem's own Validate refuses
// it, under the setting's key.
func TestConfigValidateTakesTheSubsystemsBounds(t *testing.T) {
	for _, size := range []int{-1, 0, 1, storage.MinBlockSize - 1, storage.MinBlockSize, 1 << 20, storage.MaxBlockSize, storage.MaxBlockSize + 1} {
		bc := storage.DefaultConfig()
		bc.BlockSize = size
		c := Default()
		c.BlobBlockSize = size
		checkSameVerdict(t, "blob_block_size", size, bc.Validate(), c.Validate())
	}
	for _, n := range []uint64{0, raftstore.MinSnapshotThreshold - 1, raftstore.MinSnapshotThreshold, 8192} {
		rc := raftstore.DefaultConfig()
		rc.SnapshotThreshold = n
		c := Default()
		c.SnapshotThreshold = n
		checkSameVerdict(t, "snapshot_threshold", n, rc.Validate(), c.Validate())
	}
	for _, lease := range []time.Duration{-1, 0, time.Millisecond, 400 * time.Millisecond, 401 * time.Millisecond} {
		rc := raftstore.DefaultConfig()
		rc.LeaderLeaseTimeout = lease
		c := Default()
		c.RaftLeaderLease = lease
		checkSameVerdict(t, "raft_leader_lease_timeout", lease, rc.Validate(), c.Validate())
	}
	for _, p := range []string{"lan", "local", "wan", "LAN"} {
		gc := gossip.Config{Name: "a", Profile: gossip.Profile(p)}
		c := Default()
		c.GossipProfile = p
		checkSameVerdict(t, "gossip_profile", p, gc.Validate(), c.Validate())
	}
}

func checkSameVerdict(t *testing.T, key string, v any, sub, agent error) {
	t.Helper()
	switch {
	case sub == nil && agent != nil:
		t.Errorf("%s %v: its subsystem accepts it, the agent refuses it: %v", key, v, agent)
	case sub != nil && agent == nil:
		t.Errorf("%s %v: its subsystem refuses it (%v), the agent accepts it", key, v, sub)
	case sub != nil && !strings.Contains(agent.Error(), key+":"):
		t.Errorf("%s %v: the agent's error does not name %s: %v", key, v, key, agent)
	}
}

// TestConfigJoinAcceptsDNSNames: join takes IP addresses and DNS names,
// with or without a port (a headless Kubernetes Service's name).
func TestConfigJoinAcceptsDNSNames(t *testing.T) {
	c := Default()
	c.Join = []string{"10.0.0.1:8402", "[fd00::1]:8402", "zrpc.zrpc.svc.cluster.local", "zrpc-0.zrpc:8402", "localhost"}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate(join %v): %v", c.Join, err)
	}
}

// TestConfigFileErrorsSayTheSettingAndWhatItWants: every problem of a
// config file is reported at once, by line, in the file's terms: the key
// of a value of the wrong kind and what it should look like, an unknown
// key with the nearest known one; the config is left as it was.
func TestConfigFileErrorsSayTheSettingAndWhatItWants(t *testing.T) {
	path := filepath.Join(t.TempDir(), "zrpc.yaml")
	src := "name: n5\ngrpc_port: abc\nstale_read_bound: 5x\nbogus_key: 1\ndata_dri: /tmp\nraft-port: 8401\nvoters:\n  - 3\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	c := Default()
	before := c
	err := c.LoadFile(path)
	if err == nil {
		t.Fatal("LoadFile accepted a file with six problems")
	}
	for _, want := range []string{
		"6 problems",
		"line 8: voters: a list is not a whole number",
		"line 2: grpc_port: `abc` is not a whole number",
		"line 3: stale_read_bound: `5x` is not a duration such as 500ms, 10s or 2m",
		`line 4: unknown setting "bogus_key"` + "\n",
		`line 5: unknown setting "data_dri"; did you mean "data_dir"?`,
		`line 6: unknown setting "raft-port"; did you mean "raft_port"?`,
		"zrpcd agent --help",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("LoadFile error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "node.Config") {
		t.Errorf("LoadFile error names a Go type:\n%v", err)
	}
	if c.Name != before.Name || c.GRPCPort != before.GRPCPort {
		t.Errorf("a failed LoadFile changed the config: name %q, grpc port %d", c.Name, c.GRPCPort)
	}
}

// TestConfigRefusesALeaderWaitSoLongItsSumOverflows: leader_wait plus
// raft_election_timeout must stay under half the dedup window; a
// leader_wait so long that the sum wraps around is refused too.
func TestConfigRefusesALeaderWaitSoLongItsSumOverflows(t *testing.T) {
	c := Default()
	c.RaftHeartbeatTimeout, c.RaftElectionTimeout, c.RaftLeaderLease = time.Second, time.Second, time.Second
	c.LeaderWait = math.MaxInt64
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "leader_wait:") {
		t.Fatalf("Validate with leader_wait %s = %v, want an error naming leader_wait", c.LeaderWait, err)
	}
}

// TestConfigFileThatIsNoFileIsRefusedAtOnce: --config naming a FIFO
// nothing writes into, a directory or a file far larger than any config
// file fails at once, saying what the path is, instead of blocking the
// start or reading it all into memory.
func TestConfigFileThatIsNoFileIsRefusedAtOnce(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge.yaml")
	if err := os.WriteFile(huge, []byte("name: n1\n"+strings.Repeat("# padding\n", maxConfigFileBytes/10+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{fifo, "the pipe gave no bytes: nothing was writing into it"},
		{dir, "is a directory, not a file"},
		{huge, "larger than 1024 KiB"},
	} {
		done := make(chan error, 1)
		go func() {
			c := Default()
			done <- c.LoadFile(tc.path)
		}()
		var err error
		testwait.For(t, 10*time.Second, "LoadFile("+tc.path+") to return", func() bool {
			select {
			case err = <-done:
				return true
			default:
				return false
			}
		})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("LoadFile(%s) = %v, want an error naming the path and saying %q", tc.path, err, tc.want)
		}
	}
}

// TestConfigFileFromAPipe: --config may name a pipe (`--config <(...)`,
// a FIFO): its config is read to its end. A writer that sends more than
// any config file, or never finishes, is refused with an error saying
// so, instead of filling the agent's memory or blocking its start.
func TestConfigFileFromAPipe(t *testing.T) {
	old := configPipeWait
	configPipeWait = 500 * time.Millisecond
	t.Cleanup(func() { configPipeWait = old })
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	for _, tc := range []struct {
		name  string
		write func(w *os.File)
		want  string // the error's; "" for a config loaded
	}{
		{"config", func(w *os.File) { w.WriteString("name: piped\ngrpc_port: 9400\n") }, ""},
		{"endless", func(w *os.File) {
			for {
				if _, err := w.Write(bytes.Repeat([]byte("# padding\n"), 4096)); err != nil {
					return
				}
			}
		}, "larger than 1024 KiB"},
		{"unfinished", func(w *os.File) {
			w.WriteString("name: piped\n")
			<-stop // not before the read gave up
		}, "its writer did not finish within"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fifo := filepath.Join(t.TempDir(), "config.yaml")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			// The writer opens first, as the shell's is for <(...).
			opened := make(chan *os.File, 1)
			go func() {
				w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
				if err != nil {
					opened <- nil
					return
				}
				opened <- w
			}()
			r, err := os.Open(fifo) // meets the writer's open
			if err != nil {
				t.Fatal(err)
			}
			w := <-opened
			if w == nil {
				t.Fatal("open the FIFO for writing failed")
			}
			defer r.Close()
			go func() {
				tc.write(w)
				w.Close()
			}()
			c := Default()
			err = c.LoadFile(fifo)
			if tc.want == "" {
				if err != nil || c.Name != "piped" || c.GRPCPort != 9400 {
					t.Fatalf("LoadFile(a FIFO) = %v, name %q, grpc_port %d; want the piped config", err, c.Name, c.GRPCPort)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), fifo) {
				t.Fatalf("LoadFile(a FIFO whose writer is %s) = %v, want an error naming the path and saying %q", tc.name, err, tc.want)
			}
		})
	}
}

// TestConfigFileRefusesWhatItWouldIgnoreOrCut: a fraction where a whole
// number goes would be cut short, and the settings of a second YAML
// document ignored; each is refused with its line, and the config is left
// as it was. A whole number in exponent form is taken.
func TestConfigFileRefusesWhatItWouldIgnoreOrCut(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"name: n5\nvoters: 2.5\n", "line 2: voters: 2.5 is not a whole number"},
		{"name: n5\nmax_registry_bytes: 1.5e3\nsnapshot_threshold: 10.25\n", "line 3: snapshot_threshold: 10.25 is not a whole number"},
		{"name: n5\nmax_registry_bytes: -.inf\n", "line 2: max_registry_bytes: -.inf is not a whole number"},
		{"name: n5\nsnapshot_threshold: -1.0\n", "line 2: snapshot_threshold: -1.0 is not a whole number"},
		{"name: n5\n---\ngrpc_port: 9400\n", "line 2: a second YAML document starts (---)"},
	} {
		path := filepath.Join(t.TempDir(), "zrpc.yaml")
		if err := os.WriteFile(path, []byte(tc.src), 0o600); err != nil {
			t.Fatal(err)
		}
		c := Default()
		err := c.LoadFile(path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadFile of %q = %v, want an error saying %q", tc.src, err, tc.want)
		}
		if c.Name != Default().Name {
			t.Errorf("LoadFile of %q failed but set name %q", tc.src, c.Name)
		}
	}
	path := filepath.Join(t.TempDir(), "zrpc.yaml")
	if err := os.WriteFile(path, []byte("max_registry_bytes: 1e9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := Default()
	if err := c.LoadFile(path); err != nil || c.MaxRegistryBytes != 1e9 {
		t.Errorf("LoadFile of max_registry_bytes: 1e9 = %v, max_registry_bytes %d; want 1000000000", err, c.MaxRegistryBytes)
	}
}
