// Package node is the zrpc agent: the wiring that starts, in this order,
// and stops everything one agent runs:
//
//   - its data dir (datadir.go): the lock, the cluster id, peers.json;
//   - its part of the blob store (package storage; blobs.go is the agent
//     as the blob store sees it);
//   - Raft and the registry replica (package raftstore), with the loops
//     that run while this agent leads: the cluster's identity
//     (identity.go), its own node record (announce.go), TTL sweeps
//     (package health), membership reconcile (cluster.go) and blob
//     repair;
//   - the gRPC API (package grpcapi: Registry, Blobs, Status and the
//     Internal service of peers' forwarded writes), adapted to the agent
//     in api.go; forward.go sends this agent's writes to the leader;
//   - gossip membership (package gossip, cluster.go);
//   - HTTP: /metrics, /healthz, /readyz, pprof (metrics.go) and the web
//     UI at /ui/ (package ui, ui.go);
//   - DNS: <service>.service.zrpc from the replica (package dns, dns.go);
//   - the health loops of package health: gRPC checkers of the instances
//     this agent owns, and the scan for orphan and removed sessions.
//
// New validates the configuration and does no I/O; Start opens the data
// dir, starts Raft and the listeners and honours its context; Close undoes
// Start in a documented order and is safe to call twice; Leave and Halt
// end the agent for good or as a crash would. node is not the CLI: cli
// builds a Config from flags, a file and the environment and calls New. It
// is not the API either: the handlers live in grpcapi and the health logic
// in health, which see the agent only through small interfaces.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/acl"
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/internal/connlimit"
	"github.com/zrpcio/zrpc/internal/stall"
	"github.com/zrpcio/zrpc/internal/tlsconf"
	"github.com/zrpcio/zrpc/node/dns"
	"github.com/zrpcio/zrpc/node/grpcapi"
	"github.com/zrpcio/zrpc/node/health"
	"github.com/zrpcio/zrpc/node/ui"
	"github.com/zrpcio/zrpc/raftstore"
	"github.com/zrpcio/zrpc/storage"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// devBuild is the version string of an agent whose Config.Build is empty.
const devBuild = "dev"

// Node is one running agent.
type Node struct {
	cfg  Config
	opts options
	log  *slog.Logger

	dir     *dataDir
	store   *raftstore.Store
	grpc    *grpc.Server
	grpcLn  atomic.Pointer[net.Listener] // set once the API listens; read by GRPCAddr from any goroutine
	http    *http.Server
	httpLn  atomic.Pointer[net.Listener] // likewise for the HTTP endpoint
	dns     *dns.Server                  // nil while dns_port is 0 (dns.go)
	logs    *logRing                     // recent log lines, for /debug/zrpc/logs
	ui      *ui.UI
	metrics *metrics
	peers   *peerConns
	forward *raftstore.Forwarder
	health  *health.Keeper
	// stalls counts the time the agent did not run (stopped, paused,
	// starved), from Start until Close.
	stalls *stall.Detector
	// gossipAgent is set once gossip starts (cluster.go), after the gRPC
	// API and Raft, which may already read it: use gossip().
	gossipAgent atomic.Pointer[gossip.Gossip]
	blobs       *storage.Store
	tls         *tlsconf.Reloader // nil without TLS (tls.go)
	tokenTLS    bool              // the agent signs its certificate from the cluster token
	// forming is what the agent waits for to bootstrap (bootstrap_expect),
	// nil when it does not (bootstrapExpected).
	forming atomic.Pointer[string]
	// aclResolver finds tokens for the gRPC interceptors and the HTTP
	// endpoint's pprof; nil with ACLs off.
	aclResolver acl.Resolver

	// gossipRunning is gossip once started, for Raft's transport, which
	// asks it for peers' addresses from before gossip starts (raftAddrOf).
	gossipRunning atomic.Pointer[gossip.Gossip]

	// reconcileWake nudges the leader's reconcile loop after a gossip event.
	reconcileWake chan struct{}
	// left is closed when the agent has left the cluster for good (Leave).
	left chan struct{}
	// refused is closed, once, when the cluster refused this agent for a
	// reason it cannot mend by itself (refusal says which): the process
	// should exit.
	refused    chan struct{}
	refuseOnce sync.Once
	refusal    error
	// leaveMu serializes Leave; leftWith is the result of the leave that
	// completed (nil before one has).
	leaveMu  sync.Mutex
	leftWith *LeaveResult
	halting  atomic.Bool
	// leaving: the agent is leaving and says so in its gossip meta
	// (leave.go); handoffShards counts the blob shards it still holds.
	leaving       atomic.Bool
	handoffShards atomic.Int64
	// shardsFull: the shard store has no room for another block's shard
	// (shardroom.go).
	shardsFull atomic.Bool
	// shardRoom: the room left in the shard store, rounded down to a
	// power of two, as announced (shardroom.go); 0 before it is known.
	shardRoom atomic.Int64

	// ctx ends when Close begins; long-lived streams (Watch, Session) and
	// background loops stop on it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	started bool
	// founded: this Start bootstrapped a new cluster in a data dir that
	// was empty (one with a node id and no Raft log is refused), and has
	// not finished. If the start fails, Close empties the data dir again
	// before it unlocks it (discardFounding).
	founded  bool
	closeErr error
	closing  sync.Once
	// closeStep is what Close is doing now (nil when it is not running).
	closeStep atomic.Pointer[string]
}

// Option changes how New builds a Node; options are for embedding and tests.
type Option func(*options)

type options struct {
	logger          *slog.Logger
	raftStream      raft.StreamLayer
	grpcLn          net.Listener
	raftNoSync      bool
	dialer          func(ctx context.Context, addr string) (net.Conn, error)
	gossipTransport memberlist.Transport
	watchBacklog    grpcapi.WatchLimits
	wrapRaftLog     func(raft.LogStore) raft.LogStore
	shardSyncDelay  func() time.Duration
	shardWriteFault func() error
	shardReadFault  func(shardstore.ID) error
	joinResolver    gossip.Resolver
	clock           func() time.Time
}

// WithLogger sets the agent's logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithRaftStreamLayer replaces the Raft TCP transport's connections.
func WithRaftStreamLayer(s raft.StreamLayer) Option { return func(o *options) { o.raftStream = s } }

// WithGRPCListener makes the agent serve gRPC on ln instead of listening.
func WithGRPCListener(ln net.Listener) Option { return func(o *options) { o.grpcLn = ln } }

// WithDialer makes the agent dial its peers' gRPC APIs through d (tests
// inject faults this way).
func WithDialer(d func(ctx context.Context, addr string) (net.Conn, error)) Option {
	return func(o *options) { o.dialer = d }
}

// WithGossipTransport replaces memberlist's network transport.
func WithGossipTransport(t memberlist.Transport) Option {
	return func(o *options) { o.gossipTransport = t }
}

// WithClock makes the agent read clock() instead of its wall clock: what
// it stamps on the commands it proposes as leader, the TTL and
// deregister_critical_after deadlines it keeps, and what it reports to its
// peers' gossip probes (tests run an agent whose clock is off).
func WithClock(clock func() time.Time) Option {
	return func(o *options) { o.clock = clock }
}

// WithRaftNoSync turns off fsync of the Raft log. Benchmarks only: a crash
// can lose acknowledged writes.
func WithRaftNoSync() Option { return func(o *options) { o.raftNoSync = true } }

// WithRaftLogStore wraps the Raft log store (tests slow its writes down).
func WithRaftLogStore(wrap func(raft.LogStore) raft.LogStore) Option {
	return func(o *options) { o.wrapRaftLog = wrap }
}

// New checks cfg and returns an agent that has not started. It does no I/O.
func New(cfg Config, opts ...Option) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config:\n%w", err)
	}
	if cfg.Build == "" {
		cfg.Build = devBuild
	}
	n := &Node{cfg: cfg}
	for _, o := range opts {
		o(&n.opts)
	}
	base := slog.Handler(slog.DiscardHandler)
	if n.opts.logger != nil {
		base = n.opts.logger.Handler()
	}
	n.logs = &logRing{}
	n.log = slog.New(n.logs.handler(base))
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.reconcileWake = make(chan struct{}, 1)
	n.left = make(chan struct{})
	n.refused = make(chan struct{})
	return n, nil
}

func (n *Node) addr(port int) string {
	return net.JoinHostPort(n.cfg.BindAddr, strconv.Itoa(port))
}

// Start opens the data dir (locking it), starts Raft, then serves gRPC and
// HTTP, then starts the health checkers. On error everything it started is
// stopped again. If ctx ends before Start is done, Start stops at its next
// step and returns an error wrapping ctx.Err(), with nothing left running
// and the data dir unlocked.
func (n *Node) Start(ctx context.Context) (err error) {
	if n.started {
		return errors.New("node already started")
	}
	n.started = true
	defer func() {
		if err != nil {
			n.Close() // and, if this start founded a cluster, discardFounding
		}
	}()
	n.stalls = stall.Start(stallTick, n.log) // stopped by Close
	steps := []struct {
		what string
		run  func() error
	}{
		// A gossip key that cannot be read or parsed fails the start
		// before the data dir is touched, not once Raft has bootstrapped.
		{"read the gossip key", func() error { _, err := n.cfg.gossipKey(); return err }},
		{"open the data dir", func() (err error) { n.dir, err = openDataDir(n.cfg.DataDir, n.cfg.Name); return err }},
		{"load TLS certificates", n.loadTLS},
		{"open the blob store", n.openBlobs},
		{"start Raft", n.startRaft},
		{"serve gRPC", func() error {
			n.metrics = newMetrics(n)
			if n.cfg.ACL {
				n.aclResolver = acl.NewReplicaResolver(n.store.FSM())
			}
			if err := n.openSnapshotsDir(); err != nil {
				return err
			}
			n.peers = newPeerConns(n)
			n.forward = raftstore.NewForwarder(n.store, raftstore.ForwardConfig{
				LeaderWait: n.cfg.LeaderWait, Dial: n.peers.dial, LocalApply: n.applyAsLeader, Done: n.ctx.Done(),
				Reach: n.reach,
			})
			n.store.SetReadIndexSource(n.forward.ReadIndex)
			n.store.SetVoterProbe(n.voterAnswers)
			return n.startGRPC()
		}},
		{"start gossip", func() error {
			n.checkShardRoom() // before the first meta goes out
			return n.startGossip()
		}},
		{"serve HTTP", func() error {
			n.goLoop(n.recordClusterID)
			return n.startHTTP()
		}},
		{"serve DNS", n.startDNS},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("start agent %s: stopped before it could %s: %w", n.cfg.Name, s.what, err)
		}
		if err := s.run(); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("start agent %s: stopped before its checks ran: %w", n.cfg.Name, err)
	}
	n.goLoop(n.learnCommitted)
	n.goLoop(n.watchDivergence) // divergence.go
	n.goLoop(n.health.RunChecks)
	n.goLoop(n.health.RunSessionScan)
	n.goLoop(n.watchShardRoom)
	n.goLoop(n.watchCertificate)
	n.blobs.Start()
	// Everything the leader functions use is in place now: an agent that
	// is its cluster's only voter stands for election at once rather than
	// after a heartbeat timeout.
	if err := n.store.StandIfSoleVoter(); err != nil {
		return fmt.Errorf("start agent %s: %w", n.cfg.Name, err)
	}
	n.goLoop(n.store.PaceSnapshots)
	if n.cfg.SnapshotInterval > 0 {
		n.goLoop(n.newSnapshotScheduler().run)
	}
	n.founded = false // started: the cluster it founded is kept
	n.log.Info("agent started", "name", n.cfg.Name, "grpc", n.GRPCAddr(), "raft", n.store.RaftAddr(),
		"http", n.HTTPAddr(), "dns", n.DNSAddr(), "data_dir", n.cfg.DataDir)
	return nil
}

func (n *Node) startRaft() error {
	raftDir := filepath.Join(n.dir.path, raftDirName)
	if err := ensureDir(raftDir); err != nil {
		return err
	}
	// An agent that knows its cluster's id never bootstraps another; nor
	// does one that has gossiped with other agents (peers.json) and was
	// stopped before it received the log: restarted without --join, it
	// would found a cluster of its own beside the one it was joining, and
	// rejoins through the peers it remembers instead (joinPeers).
	alone := len(n.cfg.Join) == 0 && n.cfg.BootstrapExpect == 0 && n.dir.clusterID == "" && len(n.savedPeers()) == 0
	if alone && n.cfg.NonVoter {
		return fmt.Errorf("non_voter: an agent that is never a voter cannot start a cluster of its own, and this one has nothing to join: give --join (an agent of the cluster)")
	}
	bootstrap := n.cfg.Bootstrap && alone
	rc := n.cfg.raftConfig()
	rc.Dir = raftDir
	rc.BindAddr = n.addr(n.cfg.RaftPort)
	stream, err := n.raftStreamLayer(n.opts.raftStream)
	if err != nil {
		return err
	}
	rc.StreamLayer = stream
	rc.Bootstrap = bootstrap
	rc.NoSync = n.opts.raftNoSync
	rc.WrapLogStore = n.opts.wrapRaftLog
	rc.Logger = n.log
	rc.ServerAddr = n.raftAddrOf
	rc.PeerHello = n.peerReadsHello
	rc.ClusterFSMVersion = func() int { return n.clusterFSMVersion() }
	rc.RestoreLimits = n.restoreLimits
	rc.Now = n.opts.clock
	rc.Lost = n.stalls.Lost
	if n.cfg.AdvertiseAddr != "" && n.opts.raftStream == nil {
		rc.AdvertiseAddr = net.JoinHostPort(n.cfg.AdvertiseAddr, strconv.Itoa(n.cfg.RaftPort))
	}
	n.store = raftstore.New(rc)
	n.health = n.newHealth()
	n.store.OnLeader(n.initCluster)
	n.store.OnLeader(n.announceSelf)
	n.store.OnLeader(n.health.RunTTLChecks)
	n.store.OnLeader(n.runReconcile)
	n.store.OnLeader(n.blobs.RunRepair)
	if err := n.store.Open(); err != nil {
		if stream != n.opts.raftStream {
			stream.Close() // the TLS layer this agent made; raft may have closed it already
		}
		return err
	}
	if !n.store.HadState() && n.dir.clusterID != "" {
		return n.dir.lostRaftLog(n.cfg.Name, "has no Raft state", []string{clusterIDFile})
	}
	n.founded = bootstrap && !n.store.HadState()
	return nil
}

// discardFounding empties the data dir again after a Start that
// bootstrapped a cluster of one in it and then failed (a port in use).
// Left in place, that cluster would make the next start of the data dir
// (say with --join, once the port is free) the leader of a cluster nobody
// else belongs to, refused by the one it was meant to join. Nothing else
// was ever in that cluster: its agent never finished starting. Close calls
// it once the stores are closed and while the data dir is still locked:
// the LOCK file stays, so no other agent opens the directory while it is
// emptied, and whatever such an agent wrote is never removed.
func (n *Node) discardFounding() {
	if !n.founded || n.dir == nil {
		return
	}
	n.founded = false
	if err := n.dir.empty(); err != nil {
		n.log.Error("the start failed and the cluster of one it founded could not be removed; empty the data dir by hand before joining another cluster",
			"data_dir", n.dir.path, "err", err)
		return
	}
	n.log.Info("the start failed: emptied the data dir of the cluster of one it had just founded, so that it can found or join a cluster next time",
		"data_dir", n.dir.path)
}

func (n *Node) startGRPC() error {
	ln := n.opts.grpcLn
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", n.addr(n.cfg.GRPCPort)); err != nil {
			return fmt.Errorf("listen for gRPC on %s: %w", n.addr(n.cfg.GRPCPort), err)
		}
	}
	n.grpcLn.Store(&ln)
	// GRPCAddr reads ln through grpcLn: the bounded listener is another
	// variable, not ln changed under it.
	bounded := connlimit.Wrap(ln, n.cfg.MaxConnsPerClient, newConnRefusals(n.log, "gRPC", n.metrics.connsRefused.Inc).refused)
	n.grpc = newGRPCServer(n)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.grpc.Serve(bounded); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			n.log.Error("gRPC server stopped", "err", err)
		}
	}()
	return nil
}

// goLoop runs f until the node closes.
func (n *Node) goLoop(f func(ctx context.Context)) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f(n.ctx)
	}()
}

// GRPCAddr is the address the agent's API listens on.
func (n *Node) GRPCAddr() string {
	ln := n.grpcLn.Load()
	if ln == nil {
		return ""
	}
	return n.advertised((*ln).Addr())
}

// HTTPAddr is the address of /metrics, /healthz and /readyz.
func (n *Node) HTTPAddr() string {
	ln := n.httpLn.Load()
	if ln == nil {
		return ""
	}
	return n.advertised((*ln).Addr())
}

// advertised replaces an unspecified listen IP with the advertise address.
func (n *Node) advertised(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() {
		return a.String()
	}
	return net.JoinHostPort(n.cfg.advertiseIP(), strconv.Itoa(tcp.Port))
}

// Name is the agent's name.
func (n *Node) Name() string { return n.cfg.Name }

// Store is the agent's Raft registry replica.
func (n *Node) Store() *raftstore.Store { return n.store }

// Close shuts the agent down, in this order: stop accepting RPCs and end
// streams (whose sessions are then closed through Raft), stop background
// loops, hand leadership to another voter if this agent leads, stop Raft,
// close the stores and release the data dir. Safe to call more than once.
// ClosingStep says, meanwhile, which of these it is doing.
func (n *Node) Close() error {
	n.closing.Do(func() {
		n.log.Info("agent shutting down", "name", n.cfg.Name)
		defer n.closeStep.Store(nil)
		if n.ui != nil {
			n.closingStep("close the web UI's streams")
			n.ui.Close() // its live streams would hold the HTTP shutdown
		}
		if n.http != nil {
			n.closingStep("stop serving HTTP")
			shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			n.http.Shutdown(shutdownCtx)
			cancel()
		}
		if n.dns != nil {
			n.closingStep("stop serving DNS")
			n.dns.Close()
		}
		n.cancel()
		if n.grpc != nil {
			n.closingStep("stop serving gRPC")
			stopGRPC(n.grpc, 5*time.Second)
		}
		n.closingStep("stop the background loops")
		n.wg.Wait()
		if n.blobs != nil {
			n.closingStep("close the blob store")
			n.blobs.Close()
		}
		if n.peers != nil {
			n.closingStep("close the connections to peers")
			n.peers.close()
		}
		if n.store != nil {
			n.closingStep("hand leadership to another voter")
			n.transferLeadership()
		}
		// Stop gossiping without a leave message: peers see this agent as
		// failed until it is back, and it stays a cluster member.
		if n.gossip() != nil {
			n.closingStep("stop gossip")
			n.gossip().Close()
		}
		if n.store != nil {
			n.closingStep("stop Raft and close its log")
			if err := n.store.Close(); err != nil {
				n.closeErr = err
			}
		}
		if n.stalls != nil {
			n.stalls.Stop()
		}
		if n.dir != nil {
			n.closingStep("release the data dir")
			n.discardFounding() // a failed start's; still under the lock
			if err := n.dir.close(); err != nil && n.closeErr == nil {
				n.closeErr = err
			}
		}
		n.log.Info("agent stopped", "name", n.cfg.Name)
	})
	return n.closeErr
}

// closingStep records what Close does now, for ClosingStep.
func (n *Node) closingStep(what string) { n.closeStep.Store(&what) }

// ClosingStep is the step of the shutdown that Close is doing now ("stop
// Raft and close its log", ...), or "" when Close is not running: what a
// shutdown that does not end waits for.
func (n *Node) ClosingStep() string {
	if s := n.closeStep.Load(); s != nil {
		return *s
	}
	return ""
}

// stallTick is how often the agent looks whether it was stopped, paused
// or starved (internal/stall).
const stallTick = 100 * time.Millisecond

// stopGRPC stops gracefully, or forcibly once timeout has passed.
func stopGRPC(s *grpc.Server, timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		s.Stop()
		<-done
	}
}

// transferLeadership hands leadership to another voter before this leader
// stops, so the cluster does not wait an election timeout.
func (n *Node) transferLeadership() {
	if n.store.Status().State != raftstore.Leader {
		return
	}
	servers, err := n.store.Servers()
	if err != nil {
		return
	}
	voters := 0
	for _, s := range servers {
		if s.Suffrage == raftstore.Voter {
			voters++
		}
	}
	if voters < 2 {
		return
	}
	if err := n.store.TransferLeadership(context.Background()); err != nil {
		n.log.Warn("leadership transfer failed", "err", err)
		return
	}
	n.log.Info("handed leadership to another voter")
}
