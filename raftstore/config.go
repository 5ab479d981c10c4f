package raftstore

import (
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
	waltypes "github.com/hashicorp/raft-wal/types"

	"github.com/zrpcio/zrpc/internal/fielderr"
)

// Config configures a Store. Zero durations take the defaults of
// DefaultConfig.
type Config struct {
	// NodeID is this agent's name; it is also its Raft server ID.
	NodeID string
	// Dir holds the Raft log (wal/) and snapshots/. It must exist.
	Dir string
	// BindAddr is the Raft transport's listen address ("127.0.0.1:8401").
	// Ignored when StreamLayer is set.
	BindAddr string
	// AdvertiseAddr is the address peers dial; empty means the listener's.
	AdvertiseAddr string
	// StreamLayer replaces the TCP transport (tests wrap connections).
	StreamLayer raft.StreamLayer
	// ServerAddr, when set, gives the current Raft address of the server
	// with this ID (the agent asks gossip), which the transport dials
	// instead of the address in the Raft configuration: a server that came
	// back at another address (a Kubernetes pod's new IP) is reached before
	// the leader has moved it in the configuration, so a cluster whose
	// servers all moved can still elect a leader. ok false means the
	// configuration's address. Raft calls it before every RPC it sends: it
	// must be quick and must not block.
	ServerAddr func(id string) (addr string, ok bool)
	// PeerHello, when set, tells whether the agent at a Raft address
	// reads the cluster hello a new connection opens with
	// (transport_hello.go): those that do are greeted, and refused when
	// they belong to another cluster. nil: no hello is sent (hellos
	// received are answered either way). Called for each new connection.
	PeerHello func(addr string) bool
	// ClusterFSMVersion, when set, is the oldest state machine version
	// (FSMVersion) among the Raft servers, as the agents announce it.
	// Commands whose semantics older replicas would apply differently
	// are stamped only while it allows them (Command.clock_step: from
	// 3). nil: as if 1. Asked at most once a second.
	ClusterFSMVersion func() int
	// RestoreLimits, when set, are what a snapshot restored through the
	// API (RestoreSnapshot) is held to before anything changes; Raft's
	// own restores (InstallSnapshot) take the leader's state whatever it
	// holds.
	RestoreLimits func() RestoreLimits
	// Now is the wall clock stamped on the commands this store proposes
	// (Command.time); nil means time.Now. Tests shift it.
	Now func() time.Time
	// Bootstrap makes a store without Raft state bootstrap a one-voter
	// cluster of itself. A store with state never bootstraps again.
	Bootstrap bool

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	TrailingLogs       uint64
	// RetainSnapshots is how many snapshots are kept on disk.
	RetainSnapshots int
	// ApplyTimeout bounds one write when the caller's context has no deadline.
	ApplyTimeout time.Duration
	// VoteHold, when set, is how long a store that opens with Raft state
	// refuses every vote while its agent asks the peers what is committed
	// (votegate.go): until ReleaseVotes, or VoteHold has passed.
	VoteHold time.Duration
	// StaleReadBound is how old the leader's commit index a follower
	// knows may be before DEFAULT reads are refused: a follower serves them
	// once it has applied the commit index the leader sent it last, and
	// only when that arrived within the bound. A leader serves them only
	// while a quorum of voters has accepted requests it sent within the
	// bound (it may have been deposed otherwise).
	StaleReadBound time.Duration
	// Lost, when set, returns the time this agent has not run since it
	// started (internal/stall): a follower that lost time catches up to the
	// leader's read index before it serves DEFAULT reads again
	// (Store.SetReadIndexSource).
	Lost func() time.Duration
	// WatchRing is how many recent events watchers can resume from.
	WatchRing int
	// WatchRingBytes bounds the encoded size of those events together:
	// an instance may carry 16 KiB of metadata, and a ring of 65,536 such
	// events would hold a gigabyte. Past it the oldest events leave (a
	// watcher resuming from before them gets a snapshot).
	WatchRingBytes int
	// NoSync skips fsync of the Raft log's segment files (benchmarks
	// only); raft-wal's wal-meta.db is still fsynced.
	NoSync bool
	// WrapLogStore, when set, wraps the Raft log store (tests slow it down).
	WrapLogStore func(raft.LogStore) raft.LogStore
	// logFS, when set, is the file system under the Raft log (tests hold
	// or fail its fsyncs).
	logFS waltypes.VFS
	// logSyncFirst makes the leader fsync each batch before raft sends it,
	// as raft-wal alone does (benchmarks compare; syncahead.go).
	logSyncFirst bool

	Logger *slog.Logger
}

// DefaultConfig returns the defaults: timers measured for a LAN (see
// DESIGN.md "Membership"), 2 snapshots, 64Ki watch events of 32 MiB at most. Raft checks
// every SnapshotInterval (to twice that) whether SnapshotThreshold entries
// have passed since the last snapshot; 10 s keeps the log a restart
// replays short after a burst of writes (100,000 entries replay in about
// a second; a snapshot of 100,000 instances restores in a third of one).
func DefaultConfig() Config {
	return Config{
		HeartbeatTimeout:   400 * time.Millisecond,
		ElectionTimeout:    400 * time.Millisecond,
		LeaderLeaseTimeout: 400 * time.Millisecond,
		// raft sends idle followers its commit index every 1-2x
		// CommitTimeout; new commits reach them by the commit push
		// (commitpush.go), so this only bounds how soon a follower
		// whose push was lost learns the commit. Keep it well below
		// StaleReadBound: idle followers serve DEFAULT reads only while
		// the commit index keeps arriving.
		CommitTimeout:     200 * time.Millisecond,
		SnapshotThreshold: 8192,
		SnapshotInterval:  10 * time.Second,
		TrailingLogs:      10240,
		RetainSnapshots:   2,
		ApplyTimeout:      5 * time.Second,
		StaleReadBound:    5 * time.Second,
		WatchRing:         1 << 16,
		WatchRingBytes:    32 << 20,
	}
}

// minWatchRingBytes is the smallest Config.WatchRingBytes: a few of the
// largest events an instance's quota allows.
const minWatchRingBytes = 64 << 10

// MinSnapshotThreshold is the smallest Config.SnapshotThreshold: fewer
// entries would snapshot all the time.
const MinSnapshotThreshold = 16

// Validate reports every field of c out of bounds, all at once, each a
// *fielderr.Error naming the field. It checks c as given, so check a
// configuration built from DefaultConfig: New fills zero fields with
// defaults, Validate refuses zero timers.
// minRaftTimeout is the least heartbeat, election and leader lease
// timeout hashicorp/raft accepts.
const minRaftTimeout = 5 * time.Millisecond

func (c *Config) Validate() error {
	var l fielderr.List
	l.Positive("HeartbeatTimeout", c.HeartbeatTimeout)
	l.Positive("ElectionTimeout", c.ElectionTimeout)
	l.Positive("LeaderLeaseTimeout", c.LeaderLeaseTimeout)
	l.Positive("CommitTimeout", c.CommitTimeout)
	l.Positive("SnapshotInterval", c.SnapshotInterval)
	l.Positive("ApplyTimeout", c.ApplyTimeout)
	l.Positive("StaleReadBound", c.StaleReadBound)
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout && c.HeartbeatTimeout >= minRaftTimeout {
		l.Addf("LeaderLeaseTimeout", "%s must not exceed the heartbeat timeout %s", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	// hashicorp/raft refuses these when it starts, naming no setting.
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"HeartbeatTimeout", c.HeartbeatTimeout}, {"ElectionTimeout", c.ElectionTimeout}, {"LeaderLeaseTimeout", c.LeaderLeaseTimeout}} {
		if d.v > 0 && d.v < minRaftTimeout {
			l.Addf(d.field, "%s is below Raft's minimum of %s", d.v, minRaftTimeout)
		}
	}
	if c.CommitTimeout > 0 && c.CommitTimeout < time.Millisecond {
		l.Addf("CommitTimeout", "%s is below Raft's minimum of 1ms", c.CommitTimeout)
	}
	if c.ElectionTimeout < c.HeartbeatTimeout && c.ElectionTimeout >= minRaftTimeout {
		l.Addf("ElectionTimeout", "%s must be at least the heartbeat timeout %s", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.SnapshotThreshold < MinSnapshotThreshold {
		l.Addf("SnapshotThreshold", "%d is too small (minimum %d)", c.SnapshotThreshold, MinSnapshotThreshold)
	}
	if c.RetainSnapshots < 1 {
		l.Addf("RetainSnapshots", "%d must be at least 1", c.RetainSnapshots)
	}
	if c.WatchRing < 1 {
		l.Addf("WatchRing", "%d must be at least 1", c.WatchRing)
	}
	if c.WatchRingBytes < minWatchRingBytes {
		l.Addf("WatchRingBytes", "%d is too small (minimum %d, 64 KiB)", c.WatchRingBytes, minWatchRingBytes)
	}
	return l.Err()
}

func (c *Config) fill() {
	d := DefaultConfig()
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setDur(&c.HeartbeatTimeout, d.HeartbeatTimeout)
	setDur(&c.ElectionTimeout, d.ElectionTimeout)
	setDur(&c.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	setDur(&c.CommitTimeout, d.CommitTimeout)
	setDur(&c.SnapshotInterval, d.SnapshotInterval)
	setDur(&c.ApplyTimeout, d.ApplyTimeout)
	setDur(&c.StaleReadBound, d.StaleReadBound)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = d.SnapshotThreshold
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = d.TrailingLogs
	}
	if c.RetainSnapshots == 0 {
		c.RetainSnapshots = d.RetainSnapshots
	}
	if c.WatchRing == 0 {
		c.WatchRing = d.WatchRing
	}
	if c.WatchRingBytes == 0 {
		c.WatchRingBytes = d.WatchRingBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}
