package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/zrpcio/zrpc/acl"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/internal/fielderr"
	"github.com/zrpcio/zrpc/internal/pki"
	"github.com/zrpcio/zrpc/node/dns"
	"github.com/zrpcio/zrpc/raftstore"
	"github.com/zrpcio/zrpc/storage"
)

// Config is an agent's configuration. Default gives a working agent; flags,
// a YAML file and ZRPC_* environment variables override it (see cli).
//
// Each field is one setting, declared here once: its yaml tag is the key in
// the config file, ZRPC_<KEY> its environment variable and --<key> (with
// '-' for '_') its flag on `zrpcd agent`; its help tag is the flag's help
// text; its default is in Default. Settings lists them.
type Config struct {
	// Name identifies the agent in the cluster; it is its Raft server ID.
	Name string `yaml:"name" help:"agent name, unique in the cluster (default: host name)"`
	// DataDir holds the Raft log, snapshots and blob shards.
	DataDir string `yaml:"data_dir" help:"directory for the Raft log, snapshots and blobs"`
	// BindAddr is the IP every listener binds to.
	BindAddr string `yaml:"bind" help:"IP address every listener binds to"`
	// AdvertiseAddr is the IP peers and clients are told; empty means
	// BindAddr (which then must not be 0.0.0.0).
	AdvertiseAddr string `yaml:"advertise" help:"IP address peers and clients use (default: --bind)"`
	GRPCPort      int    `yaml:"grpc_port" help:"gRPC API port (0 picks a free port)"`
	RaftPort      int    `yaml:"raft_port" help:"Raft transport port"`
	GossipPort    int    `yaml:"gossip_port" help:"gossip port (tcp+udp)"`
	HTTPPort      int    `yaml:"http_port" help:"HTTP port for /metrics, /healthz, /readyz, /debug/pprof and the web UI at /ui/"`
	// HTTPBind is the IP the HTTP endpoint binds to. It is loopback unless
	// set, whatever BindAddr is: /debug/pprof shows the agent's memory and
	// goroutines, so opening it to the network is a separate decision.
	HTTPBind string `yaml:"http_bind" help:"IP address the HTTP endpoint (/metrics, /healthz, /readyz, /debug/pprof, /ui/) binds to; loopback unless set, as pprof shows the agent's memory"`
	Zone     string `yaml:"zone" help:"zone or rack of this machine, used for placement and routing"`
	// DNS answers <service>.service.<DNSDomain> from the local replica
	// (package node/dns) on DNSBind:DNSPort, UDP and TCP.
	DNSPort   int           `yaml:"dns_port" help:"DNS port (udp+tcp) answering <service>.service.zrpc with the passing instances (0: off)"`
	DNSBind   string        `yaml:"dns_bind" help:"IP address the DNS interface binds to; loopback unless set"`
	DNSDomain string        `yaml:"dns_domain" help:"domain the DNS interface answers for; names outside it are refused"`
	DNSTTL    time.Duration `yaml:"dns_ttl" help:"TTL of DNS answers (0: resolvers do not cache, so clients see health changes at once)"`
	// DNSToken is the ACL token whose service read rules decide what DNS
	// answers show when ACLs are on (queries carry no token); without it
	// DNS shows nothing. A secret.
	DNSToken string `yaml:"dns_token" help:"with ACLs on, the ACL token whose service:read rules DNS answers follow (without one DNS answers nothing); prefer --dns-token-file or ZRPC_DNS_TOKEN, as a flag shows in the process list" secret:"true"`
	// DNSTokenFile names a file holding DNSToken; Start reads it.
	DNSTokenFile string `yaml:"dns_token_file" help:"file holding the DNS token (instead of --dns-token)"`
	// Bootstrap lets an agent with an empty data dir, nothing to join and no
	// bootstrap_expect start a new one-node cluster of itself.
	Bootstrap bool `yaml:"bootstrap" help:"with an empty data dir and nothing to join, start a new one-node cluster"`
	// Join lists gossip addresses (host[:port], the port defaulting to
	// gossip_port) of agents to join; the agent retries with capped
	// exponential backoff until one answers. A DNS name stands for every
	// address it resolves to (A and AAAA), looked up again on each attempt.
	Join []string `yaml:"join" help:"gossip addresses (host[:port]) of agents to join, comma-separated or repeated; a DNS name joins every address it resolves to, looked up again on each retry"`
	// BootstrapExpect makes agents started together wait until this many
	// servers see each other, then bootstrap the cluster with all of them as
	// voters. Never bootstraps an agent that has Raft state.
	BootstrapExpect int `yaml:"bootstrap_expect" help:"wait for this many agents to see each other, then bootstrap them together (0: off)"`
	// Voters is the number of Raft voters the leader keeps (3 or 5 is
	// usual); further agents join as nonvoters and are promoted when a voter
	// is gone.
	Voters int `yaml:"voters" help:"Raft voters the cluster keeps (1-5); further agents join as nonvoters"`
	// NonVoter keeps the agent a Raft nonvoter for good: it holds a full
	// replica and serves reads, but is not counted to bootstrap nor
	// promoted when a voter is lost (demoted if it was a voter). For
	// agents on every machine beside a few placed voters, so that a lost
	// voter is replaced only by another agent placed for it.
	NonVoter bool `yaml:"non_voter" help:"never a Raft voter: keep a full replica and serve, but never be promoted when a voter is lost (agents on every machine beside a few placed voters)"`
	// DeadNodeReap is how long a failed agent stays in the cluster (its
	// instances critical) before it is removed with its instances.
	DeadNodeReap time.Duration `yaml:"dead_node_reap" help:"how long a failed agent stays in Raft and the registry before it is removed with its sessions and their instances (instances registered through it without a session stay, critical, until deregistered or the agent is back)"`
	// GossipProfile selects gossip timers: lan (default) or local (fast,
	// for tests on one machine).
	GossipProfile string `yaml:"gossip_profile" help:"gossip timers: lan, or local for agents on one machine"`
	// EncryptKey is a base64 AES key (16, 24 or 32 bytes) shared by all
	// agents to encrypt gossip; `zrpcd keygen` prints one.
	// It is a secret: kept out of /debug/pprof/cmdline, and better given
	// by EncryptKeyFile or ZRPC_ENCRYPT than by a flag, which every local
	// user sees in the process list.
	EncryptKey string `yaml:"encrypt" help:"base64 gossip encryption key shared by all agents (zrpcd keygen prints one); prefer --encrypt-file or ZRPC_ENCRYPT, as a flag shows in the process list" secret:"true"`
	// EncryptKeyFile names a file holding EncryptKey; Start reads it.
	EncryptKeyFile string `yaml:"encrypt_file" help:"file holding the base64 gossip encryption key (instead of --encrypt)"`
	// TLS: the cluster CA, this agent's certificate (zrpcctl tls cert
	// create --agent) and its key. Set, the gRPC API and the Raft
	// transport are mutual TLS only (node/tls.go).
	TLSCA   string `yaml:"tls_ca" help:"cluster CA certificate (ca.pem); with tls_cert and tls_key, gRPC and Raft accept only mutual TLS with this CA, and gossip must be encrypted (encrypt_file)"`
	TLSCert string `yaml:"tls_cert" help:"this agent's certificate (zrpcctl tls cert create --agent); reloaded on SIGHUP"`
	TLSKey  string `yaml:"tls_key" help:"the key of tls_cert (keep it mode 0600); reloaded on SIGHUP"`
	// ClusterToken secures a cluster with one shared secret instead of
	// certificate files: every agent derives the cluster CA from it, signs
	// its own agent certificate into <data_dir>/tls, and (unless encrypt
	// or encrypt_file is set) derives the gossip key from it (node/tls.go).
	// It is a secret: better given by ClusterTokenFile or
	// ZRPC_CLUSTER_TOKEN than by a flag.
	ClusterToken string `yaml:"cluster_token" help:"one secret (at least 32 random characters, e.g. zrpcd keygen) shared by all agents: mutual TLS and gossip encryption with no certificate files; prefer --cluster-token-file or ZRPC_CLUSTER_TOKEN, as a flag shows in the process list" secret:"true"`
	// ClusterTokenFile names a file holding ClusterToken; Start reads it.
	ClusterTokenFile string `yaml:"cluster_token_file" help:"file holding the cluster token (instead of --cluster-token)"`
	// ACL turns access control on: every API call must carry a token
	// (`zrpcctl acl bootstrap` makes the first), and what no policy of
	// the token grants is denied.
	ACL bool `yaml:"acl" help:"require an ACL token on every API call and deny what its policies do not grant (zrpcctl acl bootstrap makes the first token)"`
	// JoinMaxBackoff caps the wait between join attempts.
	JoinMaxBackoff time.Duration `yaml:"join_max_backoff" help:"longest wait between two join attempts"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level" help:"log level: debug, info, warn or error"`
	// LogFormat is text or json.
	LogFormat string `yaml:"log_format" help:"log format: text or json"`

	// Raft timers; see DESIGN.md "Membership" for how they were chosen.
	RaftHeartbeatTimeout time.Duration `yaml:"raft_heartbeat_timeout" help:"Raft heartbeat timeout"`
	RaftElectionTimeout  time.Duration `yaml:"raft_election_timeout" help:"Raft election timeout"`
	RaftLeaderLease      time.Duration `yaml:"raft_leader_lease_timeout" help:"Raft leader lease; at most the heartbeat timeout"`
	// SnapshotThreshold is how many log entries trigger a snapshot.
	SnapshotThreshold uint64 `yaml:"snapshot_threshold" help:"Raft log entries that trigger a snapshot"`
	// StaleReadBound: a follower that has not heard from a leader for
	// longer, or a leader that no quorum of voters has answered for longer,
	// refuses DEFAULT reads.
	StaleReadBound time.Duration `yaml:"stale_read_bound" help:"a follower that has not heard from a leader for this long, or a leader no quorum of voters has answered for this long, refuses default-consistency reads and ends the watches that require a leader"`
	// WatchRingBytes bounds the memory of the recent events watchers
	// resume from.
	WatchRingBytes int `yaml:"watch_ring_bytes" help:"encoded bytes of recent registry events kept for watchers to resume from (at least 64 KiB); a watcher resuming from an event that has left gets a snapshot"`
	// LeaderWait bounds how long a write waits for a leader during an
	// election before it fails with Unavailable.
	LeaderWait time.Duration `yaml:"leader_wait" help:"how long a write waits for a leader before it fails with Unavailable"`
	// HealthInterval is how often TTL deadlines and critical instances are
	// checked on the leader.
	HealthInterval time.Duration `yaml:"health_interval" help:"how often the leader checks TTL deadlines and critical instances"`

	// Blob storage (see storage.Config for what each does).
	BlobBlockSize      int           `yaml:"blob_block_size" help:"bytes per erasure-coded block of a blob (4096 to 8 MiB)"`
	BlobMaxSize        int64         `yaml:"blob_max_size" help:"largest blob a put may store, in bytes"`
	ShardMaxBytes      int64         `yaml:"shard_max_bytes" help:"disk space this agent gives to blob shards, in bytes (0: no limit)"`
	BlobRepairDelay    time.Duration `yaml:"blob_repair_delay" help:"how long an agent must be failed before its shards are rebuilt on others"`
	BlobRepairInterval time.Duration `yaml:"blob_repair_interval" help:"how often the leader scans blob metadata for shards to repair"`
	BlobOrphanGrace    time.Duration `yaml:"blob_orphan_grace" help:"how old a shard file no blob refers to must be before it is deleted"`
	BlobGCInterval     time.Duration `yaml:"blob_gc_interval" help:"how often this agent looks for orphan shard files"`
	BlobScrubRate      int64         `yaml:"blob_scrub_rate" help:"bytes per second the scrubber re-reads to find bit rot (0: off)"`
	BlobScrubInterval  time.Duration `yaml:"blob_scrub_interval" help:"pause between two scrubs of this agent's shards"`
	BlobPutLease       time.Duration `yaml:"blob_put_lease" help:"lease of a put a client stripes itself (1s to 10m): the leader aborts the put unless the client renews it within this time"`

	// Registry limits, enforced when a registration is applied, with the
	// limits of the leader that proposed it (so every replica agrees).
	// 0 turns a limit off. A registration past one fails with
	// ResourceExhausted naming the limit.
	MaxInstancesPerService   int   `yaml:"max_instances_per_service" help:"instances one service may have (0: no limit)"`
	MaxInstancesPerSession   int   `yaml:"max_instances_per_session" help:"instances one session (one registering process) may hold (0: no limit)"`
	MaxInstanceMetadataBytes int   `yaml:"max_instance_metadata_bytes" help:"bytes of version, tags and metadata keys and values one instance may carry (0: no limit)"`
	MaxRegistryBytes         int64 `yaml:"max_registry_bytes" help:"bytes of all instances together as the registry counts them: each instance's encoded size plus 200, plus 700 per service, about the heap they hold (0: no limit)"`

	// MaxConnsPerClient bounds the connections one client IP may hold
	// open on the gRPC API port, and on the HTTP port
	// (internal/connlimit): past it they are closed as they come, with a
	// warning a minute per IP.
	MaxConnsPerClient int `yaml:"max_conns_per_client" help:"connections one client IP may hold open at once on the gRPC API port, and as many on the HTTP port; more are closed as they come (0: no limit)"`

	// WatchQueueBytes bounds the events this agent holds for all its
	// watch streams together, read but not sent yet.
	WatchQueueBytes int64 `yaml:"watch_queue_bytes" help:"encoded bytes of events queued for all watch streams of this agent together; past it the stream with the most queued is ended as too slow and its client resumes (0: no limit)"`

	// MaxWatches and MaxSessions bound the Watch and Session streams this
	// agent serves at once (grpcapi/streamslots.go): each holds memory on
	// the agent, and a session a record on every replica.
	MaxWatches  int `yaml:"max_watches" help:"watches this agent serves at once (a Watch stream, a WatchMany stream and each of its watches take one each); more are refused with RESOURCE_EXHAUSTED naming this limit (0: no limit)"`
	MaxSessions int `yaml:"max_sessions" help:"Session streams (registering processes) this agent serves at once; more are refused with RESOURCE_EXHAUSTED naming this limit (0: no limit)"`

	// MemoryLimit is the agent process's soft memory limit
	// (runtime/debug.SetMemoryLimit; node/memlimit.go).
	MemoryLimit int64 `yaml:"memory_limit" help:"soft memory limit of the agent process in bytes: the Go garbage collector collects harder as the heap nears it, so garbage goes back before the process grows past it (0: automatic, the GOMEMLIMIT environment variable if set, else 3/4 of the cgroup memory limit the agent runs under, else none; -1: none)"`

	// SnapshotInterval is how often this agent writes a snapshot file of
	// its own replica to <data_dir>/snapshots (0: never); SnapshotRetain
	// is how many of those files it keeps (node/snapshots.go).
	SnapshotInterval time.Duration `yaml:"snapshot_interval" help:"how often this agent writes a verified snapshot file of its replica to <data_dir>/snapshots (0: off; else at least 1m)"`
	SnapshotRetain   int           `yaml:"snapshot_retain" help:"how many scheduled snapshot files this agent keeps; the oldest beyond it are deleted once a new one is verified"`

	// Build is the agent's version string, set by cli from the linker
	// flags ("dev" when empty). It is not a setting: no file key, flag or
	// environment variable sets it.
	Build string `yaml:"-"`
}

// Default returns the configuration of a production agent on this machine.
// Each subsystem's settings take the defaults of the package that uses
// them (raftstore.DefaultConfig, storage.DefaultConfig, gossip's
// defaults); only the agent's own are set here.
func Default() Config {
	name, _ := os.Hostname()
	if name == "" {
		name = "zrpc"
	}
	c := Config{
		Name:           name,
		DataDir:        "zrpc-data",
		BindAddr:       "127.0.0.1",
		GRPCPort:       8400,
		RaftPort:       8401,
		GossipPort:     8402,
		HTTPPort:       8480,
		HTTPBind:       "127.0.0.1",
		DNSPort:        8600,
		DNSBind:        "127.0.0.1",
		DNSDomain:      "zrpc.",
		Bootstrap:      true,
		Voters:         3,
		DeadNodeReap:   30 * time.Second,
		LogLevel:       "info",
		LogFormat:      "text",
		LeaderWait:     5 * time.Second,
		HealthInterval: 100 * time.Millisecond,

		MaxInstancesPerService:   10000,
		MaxInstancesPerSession:   1000,
		MaxInstanceMetadataBytes: 16 << 10,
		MaxRegistryBytes:         512 << 20,

		WatchQueueBytes:   256 << 20,
		MaxConnsPerClient: 1024,
		MaxWatches:        65536,
		MaxSessions:       16384,

		SnapshotRetain: 24,
	}
	rd, bd := raftstore.DefaultConfig(), storage.DefaultConfig()
	c.fromSubsystem(&rd, raftSettings)
	c.fromSubsystem(&bd, blobSettings)
	c.GossipProfile = string(gossip.DefaultProfile)
	c.JoinMaxBackoff = gossip.DefaultJoinMaxBackoff
	return c
}

// quota is the registry limits the leader stamps on a registration.
func (c *Config) quota() *pb.Quota {
	return &pb.Quota{
		MaxInstancesPerService:   uint32(c.MaxInstancesPerService),
		MaxInstancesPerSession:   uint32(c.MaxInstancesPerSession),
		MaxInstanceMetadataBytes: uint32(c.MaxInstanceMetadataBytes),
		MaxRegistryBytes:         uint64(c.MaxRegistryBytes),
	}
}

// minJoinMaxBackoff is the shortest join_max_backoff accepted.
const minJoinMaxBackoff = 100 * time.Millisecond

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// Validate reports every invalid field at once, joined, each naming the
// setting (its YAML key). The bounds of a subsystem's settings are that
// subsystem's (raftstore.Config.Validate, storage.Config.Validate,
// gossip.Config.Validate); Validate checks the agent's own settings and
// reports at most one problem per setting.
func (c *Config) Validate() error {
	var l fielderr.List
	c.validateAgent(&l)
	rc, gc := c.raftConfig(), c.gossipConfig()
	adoptProblems(&l, "raft", rc.Validate(), settingKeys(raftSettings))
	adoptProblems(&l, "blob store", c.blobConfig().Validate(), settingKeys(blobSettings))
	adoptProblems(&l, "gossip", gc.Validate(), gossipErrorKeys)
	return l.Err()
}

// adoptProblems adds the problems a subsystem's Validate found to l, each
// under the setting key its field maps to in keys; a field no setting sets
// (a subsystem default the agent does not change) is named after the
// subsystem. A setting that already has a problem keeps the first one.
func adoptProblems(l *fielderr.List, subsystem string, err error, keys map[string]string) {
	for _, fe := range fielderr.Split(err) {
		key, ok := keys[fe.Field]
		if !ok {
			key = subsystem + " " + fe.Field
		}
		if !l.Has(key) {
			l.Add(key, fe.Err)
		}
	}
}

// validateAgent checks the settings no subsystem checks: the agent's own,
// and those whose bounds hold for the whole agent (the name, addresses and
// ports every listener uses).
func (c *Config) validateAgent(l *fielderr.List) {
	bad := l.Addf
	if !nameRE.MatchString(c.Name) {
		bad("name", "%q must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", c.Name)
	}
	if strings.TrimSpace(c.DataDir) == "" {
		bad("data_dir", "must be set")
	}
	bind := net.ParseIP(c.BindAddr)
	if bind == nil {
		bad("bind", "%q is not an IP address", c.BindAddr)
	}
	if net.ParseIP(c.HTTPBind) == nil {
		bad("http_bind", "%q is not an IP address (127.0.0.1 keeps /metrics and /debug/pprof on this machine)", c.HTTPBind)
	}
	c.validateDNS(l)
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		bad("advertise", "%q is not an IP address", c.AdvertiseAddr)
	}
	if c.AdvertiseAddr == "" && bind != nil && bind.IsUnspecified() {
		bad("advertise", "must be set when bind is %s, so peers know where to reach this agent", c.BindAddr)
	}
	ports := map[string]int{"grpc_port": c.GRPCPort, "raft_port": c.RaftPort, "gossip_port": c.GossipPort, "http_port": c.HTTPPort, "dns_port": c.DNSPort}
	seen := map[int]string{}
	for _, f := range []string{"grpc_port", "raft_port", "gossip_port", "http_port", "dns_port"} {
		p := ports[f]
		if p < 0 || p > 65535 {
			bad(f, "%d is not a port (0-65535; 0 picks a free one)", p)
			continue
		}
		if other, dup := seen[p]; dup && p != 0 {
			bad(f, "%d is also %s", p, other)
		}
		seen[p] = f
	}
	if c.Zone != "" && !nameRE.MatchString(c.Zone) {
		bad("zone", "%q must be 1-63 letters, digits, '.', '_' or '-'", c.Zone)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "%q must be debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("log_format", "%q must be text or json", c.LogFormat)
	}
	for _, p := range []struct {
		field string
		v     time.Duration
	}{
		{"leader_wait", c.LeaderWait},
		{"health_interval", c.HealthInterval},
	} {
		if p.v <= 0 {
			bad(p.field, "must be positive, got %s", p.v)
		}
	}
	// Join attempts refused at once would follow each other without a
	// pause, each logged.
	if c.JoinMaxBackoff < minJoinMaxBackoff {
		bad("join_max_backoff", "%s is too short (minimum %s, default %s)", c.JoinMaxBackoff, minJoinMaxBackoff, gossip.DefaultJoinMaxBackoff)
	}
	// A write retried after an ambiguous failure is applied once only while
	// the FSM remembers its request id: the retry must come within that
	// window, after at most leader_wait and an election.
	// (Each is checked alone first: their sum may overflow.)
	if half := raftstore.DedupWindow / 2; c.LeaderWait >= half || c.RaftElectionTimeout >= half || c.LeaderWait+c.RaftElectionTimeout >= half {
		bad("leader_wait", "%s plus raft_election_timeout %s must stay under %s (half the window in which retried writes are recognised)",
			c.LeaderWait, c.RaftElectionTimeout, raftstore.DedupWindow/2)
	}
	if c.SnapshotInterval != 0 && c.SnapshotInterval < time.Minute {
		bad("snapshot_interval", "%s must be 0 (off) or at least 1m", c.SnapshotInterval)
	}
	if c.SnapshotRetain < 1 {
		bad("snapshot_retain", "%d must be at least 1", c.SnapshotRetain)
	}
	if c.Voters < 1 || c.Voters > 5 {
		bad("voters", "%d must be 1 to 5", c.Voters)
	}
	if c.NonVoter && c.BootstrapExpect > 0 {
		bad("non_voter", "cannot go with bootstrap_expect %d: the agents that bootstrap are the first voters; leave bootstrap_expect to the voters", c.BootstrapExpect)
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect > c.Voters {
		bad("bootstrap_expect", "%d must be 0 (off) or 1 to voters (%d)", c.BootstrapExpect, c.Voters)
	}
	for _, a := range c.Join {
		if err := gossip.ValidJoinAddr(a); err != nil {
			l.Add("join", err)
		}
	}
	// An agent names its profile; gossip.Config also takes none (lan).
	if _, err := gossip.ParseProfile(c.GossipProfile); err != nil {
		l.Add("gossip_profile", err)
	}
	if c.EncryptKey != "" {
		if _, err := gossip.ParseKey(c.EncryptKey); err != nil {
			l.Add("encrypt", err)
		}
		if c.EncryptKeyFile != "" {
			bad("encrypt_file", "set either encrypt or encrypt_file, not both")
		}
	}
	c.validateTLS(l)
	if c.DeadNodeReap < time.Second {
		bad("dead_node_reap", "%s is too short (minimum 1s)", c.DeadNodeReap)
	}
	if c.ShardMaxBytes < 0 {
		bad("shard_max_bytes", "%d must not be negative (0 means no limit)", c.ShardMaxBytes)
	}
	limits := []struct {
		field  string
		v, max int64
	}{
		{"max_instances_per_service", int64(c.MaxInstancesPerService), math.MaxUint32},
		{"max_instances_per_session", int64(c.MaxInstancesPerSession), math.MaxUint32},
		{"max_instance_metadata_bytes", int64(c.MaxInstanceMetadataBytes), math.MaxUint32},
		{"max_registry_bytes", c.MaxRegistryBytes, math.MaxInt64},
		{"watch_queue_bytes", c.WatchQueueBytes, math.MaxInt64},
		{"max_conns_per_client", int64(c.MaxConnsPerClient), math.MaxInt32},
		{"max_watches", int64(c.MaxWatches), math.MaxInt32},
		{"max_sessions", int64(c.MaxSessions), math.MaxInt32},
	}
	for _, lim := range limits {
		if lim.v < 0 || lim.v > lim.max {
			bad(lim.field, "%d must be between 0 (no limit) and %d", lim.v, lim.max)
		}
	}
	if c.MemoryLimit < -1 || (c.MemoryLimit > 0 && c.MemoryLimit < minMemoryLimit) {
		bad("memory_limit", "%d must be 0 (automatic), -1 (none) or at least %d bytes (64 MiB); below that the collector would run all the time", c.MemoryLimit, minMemoryLimit)
	}
}

// validateDNS checks the DNS interface's settings.
func (c *Config) validateDNS(l *fielderr.List) {
	if net.ParseIP(c.DNSBind) == nil {
		l.Addf("dns_bind", "%q is not an IP address (127.0.0.1 keeps DNS on this machine)", c.DNSBind)
	}
	if _, err := dns.CheckDomain(c.DNSDomain); err != nil {
		l.Add("dns_domain", err)
	}
	if c.DNSTTL < 0 || c.DNSTTL > 24*time.Hour {
		l.Addf("dns_ttl", "%s must be between 0 and 24h", c.DNSTTL)
	}
	if c.DNSToken != "" {
		if acl.ValidateSecret("dns_token", c.DNSToken) != nil {
			l.Addf("dns_token", "is not an ACL token secret (zrpcctl acl token create prints one)")
		}
		if c.DNSTokenFile != "" {
			l.Addf("dns_token_file", "set either dns_token or dns_token_file, not both")
		}
	}
}

// gossipKey returns the gossip encryption key (nil: gossip is not
// encrypted), reading it from encrypt_file when that is set.
func (c *Config) gossipKey() ([]byte, error) {
	key := c.EncryptKey
	if c.EncryptKeyFile != "" {
		b, err := os.ReadFile(c.EncryptKeyFile)
		if err != nil {
			return nil, fmt.Errorf("encrypt_file: %w", err)
		}
		key = strings.TrimSpace(string(b))
		if key == "" {
			return nil, fmt.Errorf("encrypt_file: %s is empty", c.EncryptKeyFile)
		}
	}
	if key == "" {
		token, err := c.clusterToken()
		if err != nil || token == "" {
			return nil, err
		}
		if key, err = pki.TokenGossipKey(token); err != nil {
			return nil, err
		}
	}
	k, err := gossip.ParseKey(key)
	if err != nil {
		if c.EncryptKeyFile != "" {
			return nil, fmt.Errorf("encrypt_file: key in %s: %w", c.EncryptKeyFile, err)
		}
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	return k, nil
}

// advertiseIP is the IP peers and clients use.
func (c *Config) advertiseIP() string {
	if c.AdvertiseAddr != "" {
		return c.AdvertiseAddr
	}
	return c.BindAddr
}

// LoadFile overrides c with the fields present in the YAML file at path.
// Unknown fields are an error, so a typo does not pass silently; so are a
// second YAML document, whose settings would be ignored, and a fraction
// where a whole number goes, which would be cut short.
func (c *Config) LoadFile(path string) error {
	src, err := readConfigFile(path)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	next := c.clone()
	if err := dec.Decode(&next); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("parse config %s: %w", path, explainYAML(src, err))
	}
	var more yaml.Node
	if err := dec.Decode(&more); err == nil {
		return fmt.Errorf("parse config %s: %w", path, configProblems([]string{fmt.Sprintf(
			"line %d: a second YAML document starts (---), whose settings would be ignored; put every setting in one document", more.Line)}))
	} else if !errors.Is(err, io.EOF) {
		return fmt.Errorf("parse config %s: %w", path, explainYAML(src, err))
	}
	if msgs := fractionsInWholeNumbers(src); len(msgs) > 0 {
		return fmt.Errorf("parse config %s: %w", path, configProblems(msgs))
	}
	*c = next
	return nil
}

// maxConfigFileBytes bounds the config file LoadFile reads: a file of
// every setting is a few KiB, so a larger one is not a config file.
const maxConfigFileBytes = 1 << 20

// configPipeWait bounds the read of a config given as a pipe or device,
// whose writer may never finish; tests shorten it.
var configPipeWait = 30 * time.Second

// readConfigFile reads the config file at path: a regular file, or a pipe
// or character device (`--config <(...)`, /dev/stdin) read once, up to
// its end and for at most configPipeWait. It refuses anything larger than
// maxConfigFileBytes, so a writer that never stops cannot fill the
// agent's memory, and a pipe nothing writes into.
func readConfigFile(path string) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO waits for a writer without it.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	stream := fi.Mode()&(os.ModeNamedPipe|os.ModeCharDevice) != 0
	if !fi.Mode().IsRegular() && !stream {
		return nil, fmt.Errorf("read config %s: it is a %s, not a file; give --config the path of a YAML file", path, fileKind(fi.Mode()))
	}
	if stream {
		// Not every device can have one; those are read as they come.
		_ = f.SetReadDeadline(time.Now().Add(configPipeWait))
	}
	src, err := io.ReadAll(io.LimitReader(f, maxConfigFileBytes+1))
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, fmt.Errorf("read config %s: its writer did not finish within %s; write the whole config and close the pipe", path, configPipeWait)
	case err != nil:
		return nil, fmt.Errorf("read config: %w", err)
	case len(src) > maxConfigFileBytes:
		return nil, fmt.Errorf("read config %s: larger than %d KiB, more than any config file; check that --config names the agent's YAML file",
			path, maxConfigFileBytes>>10)
	case len(src) == 0 && fi.Mode()&os.ModeNamedPipe != 0:
		return nil, fmt.Errorf("read config %s: the pipe gave no bytes: nothing was writing into it when the agent opened it (start its writer first), or it wrote nothing", path)
	}
	return src, nil
}

// fileKind names what a file that is not a regular one is.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeDevice != 0:
		return "block device"
	}
	return "special file"
}

// clone returns a copy of c that shares no slice with it, so that a load
// that fails part way can leave c as it was.
func (c *Config) clone() Config {
	next := *c
	next.Join = slices.Clone(c.Join)
	return next
}

// EnvPrefix prefixes the environment variables LoadEnv reads: ZRPC_NAME,
// ZRPC_DATA_DIR, ZRPC_GRPC_PORT, ... (the YAML key, upper-cased).
const EnvPrefix = "ZRPC_"

// Setting is one configuration setting, as declared by a Config field.
type Setting struct {
	// Key is the YAML key: data_dir.
	Key string
	// Flag is the flag name: data-dir.
	Flag string
	// Env is the environment variable: ZRPC_DATA_DIR.
	Env string
	// Help is the flag's help text.
	Help string
	// Type names the value's kind: string, bool, int, int64, uint64,
	// duration or strings (a comma-separated list).
	Type string
	// Secret settings are kept out of logs and /debug/pprof/cmdline.
	Secret bool

	index int
}

// Settings returns every setting of Config, in declaration order.
func Settings() []Setting { return slices.Clone(settings()) }

// settings reads the declaration once.
var settings = sync.OnceValue(func() []Setting {
	t := reflect.TypeFor[Config]()
	out := make([]Setting, 0, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := f.Tag.Get("yaml")
		if key == "-" {
			continue // not a setting (Build)
		}
		out = append(out, Setting{
			Key:    key,
			Flag:   strings.ReplaceAll(key, "_", "-"),
			Env:    EnvPrefix + strings.ToUpper(key),
			Help:   f.Tag.Get("help"),
			Type:   typeName(f.Type),
			Secret: f.Tag.Get("secret") == "true",
			index:  i,
		})
	}
	return out
})

// SettingByKey returns the setting with the YAML key, or false.
func SettingByKey(key string) (Setting, bool) {
	for _, s := range settings() {
		if s.Key == key {
			return s, true
		}
	}
	return Setting{}, false
}

func typeName(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[time.Duration]():
		return "duration"
	case reflect.TypeFor[[]string]():
		return "strings"
	}
	return t.Kind().String()
}

// Set parses value into the setting with the YAML key; a list setting takes
// comma-separated values.
func (c *Config) Set(key, value string) error {
	s, ok := SettingByKey(key)
	if !ok {
		return fmt.Errorf("unknown setting %q", key)
	}
	return setField(reflect.ValueOf(c).Elem().Field(s.index), value)
}

// Get formats the setting with the YAML key as Set parses it.
func (c *Config) Get(key string) string {
	s, ok := SettingByKey(key)
	if !ok {
		return ""
	}
	switch v := reflect.ValueOf(c).Elem().Field(s.index).Interface().(type) {
	case []string:
		return strings.Join(v, ",")
	default:
		return fmt.Sprint(v)
	}
}

// LoadEnv overrides c with ZRPC_<YAML KEY> variables found by lookup.
func (c *Config) LoadEnv(lookup func(string) (string, bool)) error {
	var errs []error
	next := c.clone()
	for _, s := range Settings() {
		v, ok := lookup(s.Env)
		if !ok {
			continue
		}
		if err := next.Set(s.Key, v); err != nil {
			shown := v
			if s.Secret {
				shown = "REDACTED"
			}
			errs = append(errs, fmt.Errorf("%s=%q: %w", s.Env, shown, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	*c = next
	return nil
}

// setField parses s into one Config field.
func setField(f reflect.Value, s string) error {
	switch f.Interface().(type) {
	case string:
		f.SetString(s)
	case bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("not a boolean")
		}
		f.SetBool(b)
	case int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return errors.New("not an integer")
		}
		f.SetInt(int64(n))
	case int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return errors.New("not an integer")
		}
		f.SetInt(n)
	case uint64:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return errors.New("not a non-negative integer")
		}
		f.SetUint(n)
	case []string:
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		f.Set(reflect.ValueOf(parts))
	case time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return errors.New("not a duration (like 500ms or 10s)")
		}
		f.SetInt(int64(d))
	default:
		return fmt.Errorf("unsupported field type %s", f.Type())
	}
	return nil
}
