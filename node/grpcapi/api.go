// Package grpcapi is a zrpc agent's gRPC API: the Registry service (Get,
// List, Watch, Register, Deregister, RenewTTL and the Session stream), the
// Blobs service, the Status service, the Internal service that takes the
// writes peers forward to the leader, request validation, and the
// server's interceptor chain (panic recovery, the error code table,
// per-method metrics and the proof that a caller of the agent-to-agent
// services is an agent of the cluster).
//
// It is not the agent: each service reads the registry replica and asks
// the agent for writes, leader forwarding, health and its Raft and gossip
// view through the small interfaces of this package, which package node
// implements. node builds the server (NewServer), serves and stops it.
package grpcapi

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/node/health"
	"github.com/zrpcio/zrpc/raftstore"
)

// Replica is what the API reads of the agent's registry replica
// (raftstore's FSM). Its methods are called from handlers, concurrently.
type Replica interface {
	Revision() uint64
	Instance(service, id string) *pb.Instance
	// InstanceStamp returns the revisions and health time the replica
	// set on a stored instance; ok false when it holds none.
	InstanceStamp(service, id string) (create, mod uint64, healthSince int64, ok bool)
	// EncodedInstances returns a service's instances in id order, as
	// stored (their encodings shared: read-only), and the revision.
	EncodedInstances(service string) ([]raftstore.EncodedInstance, uint64)
	Services() ([]*pb.ServiceSummary, uint64)
	Watch(service string, from uint64) *raftstore.Watcher
	WatchFunc(service string, from uint64, wake func()) *raftstore.Watcher
}

// Cluster is what the API asks of the agent's Raft cluster.
type Cluster interface {
	// Propose commits cmd through the leader and returns its revision; a
	// request id carried by ctx (WithRequestID) becomes the command's.
	Propose(ctx context.Context, cmd *pb.Command) (uint64, error)
	// OnLeader runs local when this agent leads, remote with a connection
	// to the leader otherwise, waiting a bounded time while there is none:
	// a read on the leader.
	OnLeader(ctx context.Context, local func() error, remote func(context.Context, grpc.ClientConnInterface) error) error
	// Write is OnLeader for a write that is not a Propose (a TTL renewal,
	// a snapshot restore, a peer's removal): a failure certain that the
	// write was not applied (it ran neither local nor remote, as no
	// leader was known) is marked apierr.NotApplied
	// (raftstore.Forwarder.Write).
	Write(ctx context.Context, local func() error, remote func(context.Context, grpc.ClientConnInterface) error) error
	// CheckRead returns nil when this agent may answer a read with
	// consistency c, waiting within ctx for its replica to catch up.
	CheckRead(ctx context.Context, c pb.Consistency) error
}

// Health is the agent's health keeper as the API uses it.
type Health interface {
	// RenewTTL runs on the leader (the API forwards it there).
	RenewTTL(ctx context.Context, service, id string) (uint64, error)
	ServeSession(id string) *health.ServedSession
	DestroySessions(ids ...string)
}

// Metrics counts what the API serves.
type Metrics interface {
	ObserveRPC(method string, code codes.Code, start time.Time)
	ObservePanic(method string)
	// WatchStarted and WatchEnded bracket every Watch stream.
	WatchStarted()
	WatchEnded()
	// WatchTooSlow counts a watcher ended for falling behind.
	WatchTooSlow()
	// StreamRefused counts a Watch or Session stream (kind) refused
	// because the agent served the most it takes (MaxWatches,
	// MaxSessions).
	StreamRefused(kind string)
}

// RegistryConfig is what the Registry service needs of its agent.
type RegistryConfig struct {
	// Agent is this agent's name: it owns what is registered through it,
	// and its answers say they were served by it.
	Agent   string
	Replica Replica
	Cluster Cluster
	Health  Health
	Metrics Metrics
	// WatchBacklog bounds each watch stream's backlog (zero fields keep a
	// default).
	WatchBacklog WatchLimits
	// WatchQueueBytes bounds the bytes queued for all watch streams
	// together (0: no bound): past it the stream with the most queued is
	// ended as too slow.
	WatchQueueBytes int64
	// MaxWatches and MaxSessions bound the Watch and the Session streams
	// this agent serves at once (0: no bound); past them a new stream is
	// refused with ResourceExhausted.
	MaxWatches, MaxSessions int
	// SessionOpenWait is how long a Session stream may go without its
	// first message, open (0: 10 s); it holds a max_sessions slot
	// meanwhile.
	SessionOpenWait time.Duration
	// LeaderContact returns a context that ends, its cause an
	// ErrStaleRead, when the agent loses contact with the Raft leader,
	// or that error while it has lost it; watches that require a leader
	// end with it. Nil: the agent is always in contact.
	LeaderContact func() (context.Context, error)
	// Go runs f on a goroutine the agent owns: the agent's Close waits
	// for it.
	Go     func(f func())
	Logger *slog.Logger
}

// Registry serves the Registry API on one agent.
type Registry struct {
	pb.UnimplementedRegistryServer
	cfg RegistryConfig
	log *slog.Logger
	// ctx ends when the agent begins to close: Watch streams end on it.
	ctx context.Context
	// budget bounds what all Watch streams hold queued together.
	budget *watchBudget
	// watches and sessions bound the Watch and Session streams open at
	// once.
	watches, sessions *streamSlots
}

// NewRegistry returns the Registry service of an agent whose life is ctx.
func NewRegistry(ctx context.Context, cfg RegistryConfig) *Registry {
	cfg.WatchBacklog = cfg.WatchBacklog.withDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Go == nil {
		cfg.Go = func(f func()) { go f() }
	}
	if cfg.SessionOpenWait <= 0 {
		cfg.SessionOpenWait = defaultSessionOpenWait
	}
	refused := func(kind string) {
		if cfg.Metrics != nil {
			cfg.Metrics.StreamRefused(kind)
		}
	}
	return &Registry{cfg: cfg, log: log, ctx: ctx, budget: newWatchBudget(cfg.WatchQueueBytes),
		watches:  newStreamSlots("Watch", "watches (Watch streams, WatchMany streams and their watches)", "max_watches", cfg.MaxWatches, refused, log),
		sessions: newStreamSlots("Session", "Session streams", "max_sessions", cfg.MaxSessions, refused, log),
	}
}

// TakeWatch holds one of the agent's Watch stream slots (max_watches) for
// a stream served elsewhere (the web UI's live stream) until release is
// called; it fails as a Watch past the limit does.
func (s *Registry) TakeWatch() (release func(), err error) { return s.watches.take() }

// WatchQueuedBytes is the encoded size of the events queued for all Watch
// streams and not sent yet.
func (s *Registry) WatchQueuedBytes() int64 { return s.budget.total.Load() }

// header is the header of an answer served by agent at revision rev.
func header(agent string, rev uint64) *pb.ResponseHeader {
	return &pb.ResponseHeader{Revision: rev, ServedBy: agent}
}

func (s *Registry) header(rev uint64) *pb.ResponseHeader { return header(s.cfg.Agent, rev) }

// StatusAgent is what the Status service reads of its agent and asks of
// it.
type StatusAgent interface {
	// RaftStatus is the agent's Raft state.
	RaftStatus() raftstore.Status
	// Servers is the Raft configuration.
	Servers() ([]raftstore.Server, error)
	// ClusterID is the id of the agent's cluster ("" until it is known).
	ClusterID() string
	// TLSExpires is when the agent's TLS certificate (or its CA) expires;
	// zero without TLS.
	TLSExpires() time.Time
	// Forming is what the agent waits for to bootstrap with its peers
	// (bootstrap_expect); "" when it does not.
	Forming() string
	// HandoffShards is, while the agent leaves the cluster, how many
	// blob shards it still holds and hands off; 0 otherwise.
	HandoffShards() int
	// Quorum is which voters the agent can reach.
	Quorum() (raftstore.Quorum, error)
	// Members are the agents gossip knows.
	Members() []gossip.Member
	// LastKnown is what gossip last knew of agent name, also once Members
	// no longer lists it (gossip.Gossip.LastKnown).
	LastKnown(name string) (gossip.Member, bool)
	// ClockOffset is how far agent name's wall clock was from this
	// agent's at gossip's last probe of it (gossip.Gossip.ClockOffset).
	ClockOffset(name string) (time.Duration, bool)
	// PeerStatus asks the agent serving gRPC at grpcAddr for its Status,
	// waiting a bounded time.
	PeerStatus(ctx context.Context, grpcAddr string) (*pb.StatusResponse, error)
	// PeerAnswers checks that the agent serving gRPC at grpcAddr answers
	// (its grpc.health.v1 Check), waiting a bounded time.
	PeerAnswers(ctx context.Context, grpcAddr string) error
	// Leave takes this agent out of the cluster for good, handing its
	// blob shards off first, and reports whether its removal was
	// confirmed and what became of its shards.
	Leave(ctx context.Context, req *pb.LeaveRequest) (*pb.LeaveResponse, error)
	// RemovePeer removes agent name from the cluster for good; it runs on
	// the leader.
	RemovePeer(ctx context.Context, name string) (uint64, error)
}

// StatusConfig is what the Status service needs of its agent.
type StatusConfig struct {
	// Agent is this agent's name and Build its version string.
	Agent string
	Build string
	// Replica is the agent's registry replica.
	Replica interface {
		Revision() uint64
		Node(name string) *pb.Node
		// ApplyHash is the replica's apply hash at a revision
		// (raftstore applyhash.go); ok false when it cannot tell.
		ApplyHash(rev uint64) (sum uint64, ok bool)
		// ApplyHashChainKnown reports whether the replica knows its
		// apply hash at all.
		ApplyHashChainKnown() bool
	}
	// Cluster forwards RemovePeer to the leader.
	Cluster Cluster
	Status  StatusAgent
	// Streams, when set, returns the Watch and Session streams the agent
	// serves and their limits (Registry.Streams).
	Streams func() StreamCounts
}

// Status serves the Status API: the agent's Raft and gossip view, leave
// and remove-peer.
type Status struct {
	pb.UnimplementedStatusServer
	cfg StatusConfig
}

// NewStatus returns the Status service of an agent.
func NewStatus(cfg StatusConfig) *Status { return &Status{cfg: cfg} }
