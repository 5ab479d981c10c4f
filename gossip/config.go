package gossip

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/zrpcio/zrpc/internal/fielderr"
)

// Profile names a set of memberlist timers.
type Profile string

const (
	// ProfileLAN is the default: memberlist's LAN timers, shortened to what
	// was measured safe on a loaded 2-core machine (dead after ≈1.8 s, no
	// false deaths under full CPU load; see DESIGN.md, "Membership").
	ProfileLAN Profile = "lan"
	// ProfileLocal has fast timers for tests on loopback. It declares
	// agents dead quickly and will flap on a busy or real network.
	ProfileLocal Profile = "local"
)

// Defaults of an agent that sets none.
const (
	// DefaultProfile is the timer profile of a Config whose Profile is empty.
	DefaultProfile = ProfileLAN
	// DefaultJoinMaxBackoff caps JoinRetry's wait when the caller gives none.
	DefaultJoinMaxBackoff = 30 * time.Second
)

// Config is what New needs to build a Gossip. The zero value of every
// optional field means "use the default".
type Config struct {
	// Name identifies this agent in the cluster; it must be unique. Required.
	Name string
	// BindAddr is the address memberlist listens on (TCP and UDP).
	// Empty means 0.0.0.0.
	BindAddr string
	// BindPort is the port memberlist listens on; 0 picks a free port,
	// which LocalAddr reports after Start.
	BindPort int
	// AdvertiseAddr is the IP address peers use to reach this agent.
	// Empty means the bound address (or a private IP when bound to 0.0.0.0).
	AdvertiseAddr string
	// AdvertisePort is the port peers use to reach this agent. 0 means the
	// bound port.
	AdvertisePort int
	// Meta is carried to every peer. Meta.Name may be left empty and is
	// then set to Name; if set it must equal Name. Its encoding must fit in
	// memberlist.MetaMaxSize (512) bytes.
	Meta Meta
	// Profile selects the timers; empty means DefaultProfile.
	Profile Profile
	// EncryptKey, if set, encrypts and authenticates all gossip with AES
	// (16, 24 or 32 bytes, see ParseKey). Every agent must use the same key;
	// agents without it cannot join. A keyring file (KeyringFile) wins over
	// it.
	EncryptKey []byte
	// KeyringFile, if set, keeps the gossip keyring across restarts (the
	// agent passes <data_dir>/gossip-keyring): Start reads it, and when it
	// exists its keys are used instead of EncryptKey; without it Start
	// writes EncryptKey there. Every keyring change rewrites it (mode 0600,
	// temp file, fsync, rename). A file that is not a valid keyring fails
	// Start with an error naming it.
	KeyringFile string
	// Transport replaces memberlist's NetTransport (tests wrap connections
	// to inject faults). nil means memberlist's own, bound to
	// BindAddr:BindPort.
	Transport memberlist.Transport
	// Logger receives this package's and memberlist's logs. nil discards.
	Logger *slog.Logger
	// StillMember reports whether a member this agent saw fail still
	// belongs to the cluster (the agent answers: it is in the Raft
	// configuration or the registry). Gossip keeps trying to rejoin such a
	// member, with backoff, even after memberlist has forgotten it; see
	// Start. nil means: for as long as Members lists it. It is called from
	// the rejoin goroutine and must not block or call into Gossip.
	StillMember func(name string) bool
	// Resolver looks up the DNS names given to Join. nil means the
	// system's (net.DefaultResolver).
	Resolver Resolver
	// Seeds returns gossip addresses (host:port) to rejoin through while
	// no other member is alive (the agent passes the peers it remembers).
	// nil means none. Called like StillMember.
	Seeds func() []string
	// OnNameTaken, if set, is called once, with an error wrapping
	// ErrNameTaken, when this agent, in no cluster yet (no cluster id in
	// its meta), has heard for longer than failure detection takes of an
	// agent of a cluster alive under its name at another address: two
	// agents joined under one name at the same time and the cluster took
	// the other. The agent should stop. It is called only with gossip
	// encrypted: without, members' meta is unauthenticated, and anyone
	// reaching the gossip port could forge it to stop agents. It is
	// called from memberlist's goroutines and must not block or call
	// into Gossip.
	OnNameTaken func(error)
	// Clock is the wall clock this agent reports in its acks, from which
	// the members measure their clock offset to it (ClockOffset); nil
	// means time.Now. Tests shift it.
	Clock func() time.Time

	// nameConflictWait replaces nameTakenWait as how long a conflict over
	// this agent's name lasts before OnNameTaken (tests shorten it); 0
	// means nameTakenWait.
	nameConflictWait time.Duration
	// sendNotice sends one leave notice (tests drop or hold some); nil
	// means memberlist's SendReliable.
	sendNotice func(ml *memberlist.Memberlist, to *memberlist.Node, msg []byte) error
}

// Validate reports every problem with c at once, each a *fielderr.Error
// naming the field.
func (c *Config) Validate() error {
	var l fielderr.List
	if c.Name == "" {
		l.Addf("name", "required")
	}
	if c.BindAddr != "" && net.ParseIP(c.BindAddr) == nil {
		l.Addf("bind_addr", "%q is not an IP address", c.BindAddr)
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		l.Addf("bind_port", "%d is out of range 0-65535", c.BindPort)
	}
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		l.Addf("advertise_addr", "%q is not an IP address", c.AdvertiseAddr)
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		l.Addf("advertise_port", "%d is out of range 0-65535", c.AdvertisePort)
	}
	if c.Meta.Name != "" && c.Meta.Name != c.Name {
		l.Addf("meta.name", "%q differs from name %q", c.Meta.Name, c.Name)
	}
	// As sent: with a run id (Gossip.run).
	if _, err := c.metaWithName().encodeRun(strings.Repeat("0", runIDLen)); err != nil {
		l.Add("meta", err) // keeps ErrMetaTooLarge
	}
	if c.Profile != "" {
		if _, err := ParseProfile(string(c.Profile)); err != nil {
			l.Add("profile", err)
		}
	}
	if len(c.EncryptKey) > 0 {
		if err := checkKeyLen(len(c.EncryptKey)); err != nil {
			l.Add("encrypt_key", err)
		}
	}
	return l.Err()
}

// ParseProfile returns the profile named s: lan or local.
func ParseProfile(s string) (Profile, error) {
	switch p := Profile(s); p {
	case ProfileLAN, ProfileLocal:
		return p, nil
	}
	return "", fmt.Errorf("%q must be %q or %q", s, ProfileLAN, ProfileLocal)
}

// metaWithName returns c.Meta with its Name defaulted to c.Name.
func (c *Config) metaWithName() Meta {
	m := c.Meta
	if m.Name == "" {
		m.Name = c.Name
	}
	return m
}

// rejoinTimers are how often gossip tries to rejoin members it saw fail:
// a member is first tried one interval after it failed, then with its own
// backoff doubling up to maxBackoff after every attempt that found nobody.
type rejoinTimers struct {
	interval, maxBackoff time.Duration
}

// profileRejoin returns the rejoin timers of p. They are short next to
// dead_node_reap (30 s by default), so that a partition shorter than it
// heals before the leader removes anyone.
func profileRejoin(p Profile) rejoinTimers {
	if p == ProfileLocal {
		return rejoinTimers{interval: 200 * time.Millisecond, maxBackoff: time.Second}
	}
	return rejoinTimers{interval: time.Second, maxBackoff: 8 * time.Second}
}

// profileConfig returns memberlist's configuration for p: the one place the
// timers are set. Name, addresses, delegates and the key are filled in by
// Start.
func profileConfig(p Profile) *memberlist.Config {
	var mc *memberlist.Config
	switch p {
	case ProfileLocal:
		mc = memberlist.DefaultLocalConfig()
		mc.ProbeInterval = 100 * time.Millisecond
		mc.ProbeTimeout = 50 * time.Millisecond
		mc.SuspicionMult = 3
		mc.GossipInterval = 50 * time.Millisecond
		mc.TCPTimeout = time.Second
		mc.PushPullInterval = 5 * time.Second
	default:
		mc = memberlist.DefaultLANConfig()
		// Measured: dead after ≈1.8 s instead of 5.9 s, no false deaths
		// under load. Keep SuspicionMult ≥ 3 so a suspicion needs a second
		// agent's agreement.
		mc.ProbeInterval = 400 * time.Millisecond
		mc.ProbeTimeout = 200 * time.Millisecond
		mc.SuspicionMult = 3
		mc.GossipInterval = 100 * time.Millisecond
	}
	// A member declared dead may come back under its name from another
	// address at once (a Kubernetes pod restarted with a new IP): memberlist
	// would otherwise refuse it as a conflicting address until every agent
	// has forgotten the dead one. A live member's address is never taken.
	mc.DeadNodeReclaimTime = time.Nanosecond
	return mc
}
