package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc"
)

// DefaultDialTimeout bounds one connection attempt to an agent.
const DefaultDialTimeout = 5 * time.Second

// DefaultCallTimeout bounds a call whose context has no deadline: an
// agent that takes the call and never answers it (stopped mid-call, its
// answer lost) would otherwise hold the caller for good. An agent holds
// a write for at most leader_wait (5 s by default) while it finds no
// leader, so this leaves room for the failover to other agents, on a
// loaded cluster too.
const DefaultCallTimeout = 30 * time.Second

// DefaultAttemptTimeout bounds one attempt of a call on one endpoint when
// the client has others to try. An agent holds a write for up to
// leader_wait (5 s by default) while it finds no leader, and answers it
// then; this leaves that room, and room for a loaded agent.
const DefaultAttemptTimeout = 8 * time.Second

// Config configures a Client.
type Config struct {
	// Endpoints are agent gRPC addresses ("host:port"); at least one.
	Endpoints []string
	// DialTimeout bounds one connection attempt to one endpoint; zero means
	// DefaultDialTimeout. Connections are made lazily, on the first call.
	DialTimeout time.Duration
	// CallTimeout bounds each call of the Client (Register, Get,
	// Deregister, RenewTTL, Status, the ACL calls, opening a Session, ...)
	// whose context has no deadline, failover to other endpoints
	// included; zero means DefaultCallTimeout. A context's own deadline,
	// shorter or longer, always wins. It does not bound streams that run
	// as long as their data or their caller does: Watch, a Session once
	// open, PutBlob's and GetBlob's transfers, SaveSnapshot and
	// RestoreSnapshot, Leave.
	CallTimeout time.Duration
	// AttemptTimeout bounds one attempt of a call on one endpoint when
	// the client has other endpoints: an agent that takes the call and
	// does not answer it within AttemptTimeout, although it answers
	// health checks (a handler that hangs, a disk that does not return),
	// is left, and the call goes to the next endpoint, which then stays
	// the one calls go to first. Zero means DefaultAttemptTimeout. It
	// does not apply with one endpoint (there is nowhere to go), nor to
	// calls an agent may rightly hold longer: the keyring calls,
	// RemovePeer, the commit of a striped PutBlob, and streams.
	AttemptTimeout time.Duration
	// Token is the ACL token's secret, sent with every call as
	// "authorization: Bearer <token>"; empty sends none (agents without
	// ACLs need none).
	Token string
	// Logger receives failover (Debug) and watch reconnect (Info) records;
	// nil discards them.
	Logger *slog.Logger
	// Dialer, when set, opens every connection to an agent (addr is the
	// endpoint's host:port, a name resolved to an IP): agents behind a
	// tunnel, a proxy or in another network namespace. nil dials TCP.
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
	// TLS, when set, secures every agent connection (see tls.go); nil
	// means plaintext.
	TLS *tls.Config

	// dialOptions are added to every connection's; tests inject faults
	// with them.
	dialOptions []grpc.DialOption
	// shardStall bounds how long a striped put waits on an agent that
	// takes no shard data (a stream not opened, a shard not sent) before
	// it counts the agent as failed; zero means defaultShardStall. Tests
	// shorten it.
	shardStall time.Duration
}

// defaultShardStall is Config.shardStall's default: as long as an agent
// gives one shard transfer of a coordinated put.
const defaultShardStall = 30 * time.Second

// Validate reports whether c can build a Client. It checks shapes only: it
// does not resolve or dial the endpoints.
func (c Config) Validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("no endpoints: need at least one agent address host:port")
	}
	for _, ep := range c.Endpoints {
		_, port, err := net.SplitHostPort(ep)
		if err != nil {
			return fmt.Errorf("endpoint %q: want host:port: %w", ep, err)
		}
		// Else every call would fail as if no agent answered, and
		// callers that wait for an agent (rpc.Server's Start) would wait
		// for good.
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("endpoint %q: port %q is not a number from 1 to 65535: want host:port, the agent's gRPC port", ep, port)
		}
	}
	if c.DialTimeout < 0 {
		return fmt.Errorf("dial timeout %s is negative", c.DialTimeout)
	}
	if c.CallTimeout < 0 {
		return fmt.Errorf("call timeout %s is negative: want 0 (DefaultCallTimeout) or more; a context with a deadline bounds a call by its own", c.CallTimeout)
	}
	if c.AttemptTimeout < 0 {
		return fmt.Errorf("attempt timeout %s is negative: want 0 (DefaultAttemptTimeout) or more", c.AttemptTimeout)
	}
	return validateToken(c.Token)
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.AttemptTimeout == 0 {
		c.AttemptTimeout = DefaultAttemptTimeout
	}
	if c.shardStall == 0 {
		c.shardStall = defaultShardStall
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Endpoints = append([]string(nil), c.Endpoints...)
	c.dialOptions = append(tokenDialOptions(c.Token), c.dialOptions...)
	return c
}
