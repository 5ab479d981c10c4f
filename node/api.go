package node

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/zrpcio/zrpc/acl"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/node/grpcapi"
	"github.com/zrpcio/zrpc/raftstore"
)

// The agent's gRPC API lives in package grpcapi; it sees the agent through
// the adapters in this file.

// Names of grpcapi that the agent's forwarder uses.
var (
	peerOnly      = grpcapi.PeerOnly
	clusterAuth   = grpcapi.ClusterAuth
	agentProof    = grpcapi.AgentProof
	requestIDFrom = grpcapi.RequestIDFrom
	newSessionID  = grpcapi.NewSessionID
)

const (
	clusterAuthKey = grpcapi.ClusterAuthKey
	agentProofKey  = grpcapi.AgentProofKey
	maxRecvMessage = grpcapi.MaxRecvMessage
)

// WithWatchBacklog bounds the backlog of each watch stream to events events
// and bytes bytes (encoded size); zero keeps a default. A watcher that falls
// further behind is ended with "watch too slow, resume from revision N".
func WithWatchBacklog(events, bytes int) Option {
	return func(o *options) { o.watchBacklog = grpcapi.WatchLimits{Events: events, Bytes: bytes} }
}

// newGRPCServer builds the agent's gRPC server; startGRPC serves it and
// Close stops it.
func newGRPCServer(n *Node) *grpc.Server {
	keyring := grpcapi.NewKeyring(grpcapi.KeyringConfig{
		Agent: n.cfg.Name, Local: apiKeyring{n}, Cluster: apiKeyringCluster{n}, Logger: n.log,
	})
	return grpcapi.NewServer(
		n.apiServerConfig(),
		grpcapi.Services{
			Registry:    n.newRegistry(),
			Status:      n.newStatus(),
			Internal:    grpcapi.NewInternal(apiLeader{n}, apiMembership{n}),
			Blobs:       grpcapi.NewBlobs(n.blobs, n.store.FSM()),
			Shards:      n.blobs.ShardServer(),
			Keyring:     keyring,
			KeyringPeer: keyring.Peer(),
			ACL:         n.newACL(),
			Snapshot:    n.newSnapshots(),
		})
}

// newStatus builds the Status service on this agent (served over gRPC,
// and called in process by the web UI).
func (n *Node) newStatus() *grpcapi.Status {
	return grpcapi.NewStatus(grpcapi.StatusConfig{
		Agent: n.cfg.Name, Build: n.cfg.Build, Replica: n.store.FSM(), Cluster: apiCluster{n}, Status: apiStatus{n},
		Streams: func() grpcapi.StreamCounts {
			if r := n.metrics.registry.Load(); r != nil {
				return r.Streams()
			}
			return grpcapi.StreamCounts{}
		},
	})
}

// apiKeyring is this agent's gossip keyring as the Keyring service uses it.
type apiKeyring struct{ n *Node }

func (k apiKeyring) Keys() (string, []string) {
	if k.n.gossip() == nil {
		return "", nil // gossip starts after the gRPC API
	}
	return k.n.gossip().Keys()
}

func (k apiKeyring) InstallKey(key string) error { return k.change((*gossip.Gossip).InstallKey, key) }
func (k apiKeyring) UseKey(key string) error     { return k.change((*gossip.Gossip).UseKey, key) }
func (k apiKeyring) RemoveKey(key string) error  { return k.change((*gossip.Gossip).RemoveKey, key) }

func (k apiKeyring) change(op func(*gossip.Gossip, string) error, key string) error {
	if k.n.gossip() == nil {
		return gossip.ErrNotStarted
	}
	return op(k.n.gossip(), key)
}

// apiKeyringCluster is the cluster as the Keyring service fans out over
// it: gossip's members, reached over the agent's peer connections (which
// carry the cluster's proof that KeyringPeer requires).
type apiKeyringCluster struct{ n *Node }

func (c apiKeyringCluster) Members() []gossip.Member { return apiStatus(c).Members() }

func (c apiKeyringCluster) KeyringPeer(grpcAddr string) (pb.KeyringPeerClient, error) {
	conn, err := c.n.peers.conn(grpcAddr)
	if err != nil {
		return nil, err
	}
	return pb.NewKeyringPeerClient(conn), nil
}

// apiServerConfig is what the agent's gRPC server chain needs of it.
func (n *Node) apiServerConfig() grpcapi.ServerConfig {
	self := n.GRPCAddr() // the listener is bound: the address peers dial
	proofs := grpcapi.AgentProofs{
		Secret: n.store.FSM().ClusterSecret,
		Self:   func() string { return self },
		Legacy: n.unboundProofs,
	}
	cfg := grpcapi.ServerConfig{Metrics: apiMetrics{n.metrics}, Proofs: proofs, Logger: n.log, TLS: n.serverTLS()}
	if n.cfg.ACL {
		fsm := n.store.FSM()
		cfg.ACL = acl.NewInterceptors(acl.InterceptorConfig{
			Resolver: n.aclResolver,
			// With TLS, an agent's call also comes with an agent
			// certificate, as checkPeer requires of the peer API.
			AgentProof: func(ctx context.Context, method string) bool {
				return (n.tls == nil || grpcapi.AgentCertificate(ctx)) && proofs.Has(ctx, method)
			},
			OnRefused: n.metrics.observeACLRefusal,
			Logger:    n.log,
			Changed:   fsm.ACLChanged,
		})
	}
	return cfg
}

// newACL builds the ACL service, served with ACLs on.
func (n *Node) newACL() pb.ACLServer {
	if !n.cfg.ACL {
		return nil
	}
	return grpcapi.NewACL(grpcapi.ACLConfig{Agent: n.cfg.Name, Replica: n.store.FSM(), Cluster: apiCluster{n}})
}

// newRegistry builds the Registry service on this agent. Its Watch
// streams end when the agent begins to close, and their goroutines are
// the agent's.
func (n *Node) newRegistry() *grpcapi.Registry {
	r := grpcapi.NewRegistry(n.ctx, grpcapi.RegistryConfig{
		Agent:           n.cfg.Name,
		Replica:         n.store.FSM(),
		Cluster:         apiCluster{n},
		Health:          n.health,
		Metrics:         apiMetrics{n.metrics},
		WatchBacklog:    n.opts.watchBacklog,
		WatchQueueBytes: n.cfg.WatchQueueBytes,
		MaxWatches:      n.cfg.MaxWatches,
		MaxSessions:     n.cfg.MaxSessions,
		LeaderContact:   n.store.LeaderContact,
		Go: func(f func()) {
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				f()
			}()
		},
		Logger: n.log,
	})
	n.metrics.registry.Store(r)
	return r
}

// apiCluster is the agent's Raft cluster as the API uses it.
type apiCluster struct{ n *Node }

func (c apiCluster) Propose(ctx context.Context, cmd *pb.Command) (uint64, error) {
	return c.n.propose(ctx, cmd)
}

func (c apiCluster) OnLeader(ctx context.Context, local func() error, remote func(context.Context, grpc.ClientConnInterface) error) error {
	return c.n.forward.OnLeader(ctx, local, remote)
}

func (c apiCluster) Write(ctx context.Context, local func() error, remote func(context.Context, grpc.ClientConnInterface) error) error {
	return c.n.forward.Write(ctx, local, remote)
}

func (c apiCluster) CheckRead(ctx context.Context, consistency pb.Consistency) error {
	return c.n.store.CheckReadContext(ctx, consistency)
}

// apiLeader is this agent as the leader peers forward their writes to.
type apiLeader struct{ n *Node }

func (l apiLeader) IsLeader() bool { return l.n.store.IsLeader() }

func (l apiLeader) ReadIndex(ctx context.Context) (uint64, error) { return l.n.store.ReadIndex(ctx) }

func (l apiLeader) ApplyAsLeader(ctx context.Context, cmd *pb.Command) (uint64, error) {
	return l.n.applyAsLeader(ctx, cmd)
}

// apiStatus is what the Status service reads of this agent and asks of it.
type apiStatus struct{ n *Node }

func (a apiStatus) RaftStatus() raftstore.Status         { return a.n.store.Status() }
func (a apiStatus) Servers() ([]raftstore.Server, error) { return a.n.store.Servers() }
func (a apiStatus) ClusterID() string                    { return a.n.clusterID() }
func (a apiStatus) Forming() string {
	if s := a.n.forming.Load(); s != nil {
		return *s
	}
	return ""
}
func (a apiStatus) TLSExpires() time.Time {
	if a.n.tls == nil {
		return time.Time{}
	}
	return a.n.tls.NotAfter()
}
func (a apiStatus) Quorum() (raftstore.Quorum, error) { return a.n.quorum() }

func (a apiStatus) Members() []gossip.Member {
	if a.n.gossip() == nil {
		return nil // gossip starts after the gRPC API
	}
	return a.n.gossip().Members()
}

func (a apiStatus) LastKnown(name string) (gossip.Member, bool) {
	if a.n.gossip() == nil {
		return gossip.Member{}, false
	}
	return a.n.gossip().LastKnown(name)
}

func (a apiStatus) ClockOffset(name string) (time.Duration, bool) {
	if a.n.gossip() == nil {
		return 0, false
	}
	return a.n.gossip().ClockOffset(name)
}

func (a apiStatus) PeerStatus(ctx context.Context, grpcAddr string) (*pb.StatusResponse, error) {
	return a.n.peerStatus(ctx, grpcAddr)
}

func (a apiStatus) PeerAnswers(ctx context.Context, grpcAddr string) error {
	return a.n.peerAnswers(ctx, grpcAddr)
}

func (a apiStatus) Leave(ctx context.Context, req *pb.LeaveRequest) (*pb.LeaveResponse, error) {
	res, err := a.n.Leave(ctx, LeaveOptions{AllowDegraded: req.GetAllowDegraded()})
	if err != nil {
		return nil, err
	}
	return &pb.LeaveResponse{Removed: res.Removed, ShardsHandedOff: uint64(res.HandedOff), ShardsLeft: uint64(res.ShardsLeft)}, nil
}

func (a apiStatus) HandoffShards() int { return int(a.n.handoffShards.Load()) }

func (a apiStatus) RemovePeer(ctx context.Context, name string) (uint64, error) {
	return a.n.removePeer(ctx, name)
}

// apiMetrics counts the API's calls in the agent's metrics.
type apiMetrics struct{ m *metrics }

func (a apiMetrics) ObserveRPC(method string, code codes.Code, start time.Time) {
	a.m.observeRPC(method, code, start)
}
func (a apiMetrics) ObservePanic(method string) { a.m.observePanic(method) }
func (a apiMetrics) WatchStarted()              { a.m.watchers.Inc() }
func (a apiMetrics) WatchEnded()                { a.m.watchers.Dec() }
func (a apiMetrics) WatchTooSlow()              { a.m.slowWatchers.Inc() }
func (a apiMetrics) StreamRefused(kind string)  { a.m.streamsRefused.WithLabelValues(kind).Inc() }

// apiMembership is what this agent knows of the cluster's agents and
// sessions: its replica and its gossip view.
type apiMembership struct{ n *Node }

func (m apiMembership) Self() string                  { return m.n.cfg.Name }
func (m apiMembership) Node(name string) *pb.Node     { return m.n.store.FSM().Node(name) }
func (m apiMembership) Session(id string) *pb.Session { return m.n.store.FSM().Session(id) }

// GossipStatus is what gossip last knew of agent name, also once it has
// forgotten a member failed longer ago than it remembers: an agent reaped
// during a long partition forwards its own writes again as soon as the
// partition heals, before gossip here has heard that it is back.
func (m apiMembership) GossipStatus(name string) string {
	if g := m.n.gossip(); g != nil {
		if member, ok := g.LastKnown(name); ok {
			return member.Status
		}
	}
	return "unknown"
}
