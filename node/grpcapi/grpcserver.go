package grpcapi

import (
	"context"
	"crypto/tls"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/acl"
	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/pki"
	"github.com/zrpcio/zrpc/internal/tlsconf"
	"github.com/zrpcio/zrpc/internal/wirecodec"
	"github.com/zrpcio/zrpc/storage"
)

// maxMessage bounds gRPC messages; a watch snapshot of a large registry is
// the biggest.
const maxMessage = 64 << 20

// streamWorkers is how many goroutines the server keeps to run calls on.
// A call handed to a new goroutine grows that goroutine's stack as it
// goes down the handlers, raft and the forward to the leader (copying it
// several times: 7 % of a 3-agent cluster's CPU at 64 writers); a worker
// keeps its grown stack for the next call. 64 covers the writes in flight
// on a busy leader; calls past them, and long streams (sessions, watches)
// that may keep a worker for good, get a new goroutine each, as without
// workers. Idle workers cost a parked goroutine each.
const streamWorkers = 64

// MaxRecvMessage bounds requests; a shard of the largest block is the
// biggest. Agents' connections to each other send up to it too.
const MaxRecvMessage = storage.MaxBlockSize + 1<<20

// Flow-control windows the agent grants every connection: what a caller
// may send ahead of the handler on one stream, and on the whole
// connection. Static, they spare both sides gRPC's dynamic windows: a
// WINDOW_UPDATE every 16 KiB frame at the initial 64 KiB, and the pings
// by which gRPC measures the link to grow them, again on every new
// connection. Shards of client-striped puts and peers' PutShard arrive at
// line rate from the first byte. Memory stays within what the dynamic
// windows may grow to (grpc-go grows a connection's windows up to 16 MiB
// each): at most ConnWindow of unread data per connection.
const (
	StreamWindow = 4 << 20
	ConnWindow   = 16 << 20
)

// PeerWindows are the dial options of an agent's connections to its
// peers: they grant a peer the windows the agent's server grants its
// callers, so that shards read from a peer (GetShard answers of gets
// through an agent, and of repair) stream at line rate from the start.
func PeerWindows() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithInitialWindowSize(StreamWindow), grpc.WithInitialConnWindowSize(ConnWindow)}
}

// ServerConfig is what the agent's gRPC server needs of its agent.
type ServerConfig struct {
	Metrics Metrics
	// Proofs checks the proof calls of the agent-to-agent API carry
	// (agentproof.go).
	Proofs AgentProofs
	// TLS, when set, makes the server mutual TLS only, and the
	// agent-to-agent services take only callers with agent certificates.
	TLS *tls.Config
	// ACL, when set (ACLs on), enforces every call's token (package acl),
	// after panic recovery and before the handlers.
	ACL    *acl.Interceptors
	Logger *slog.Logger
}

// Services are the gRPC services an agent serves.
type Services struct {
	Registry pb.RegistryServer
	Status   pb.StatusServer
	Internal pb.InternalServer
	Blobs    pb.BlobsServer
	Shards   pb.ShardsServer
	// ACL is served when set (ACLs on).
	ACL pb.ACLServer
	// Keyring and KeyringPeer (NewKeyring, Keyring.Peer) rotate the gossip
	// key; nil leaves them out.
	Keyring     pb.KeyringServer
	KeyringPeer pb.KeyringPeerServer
	// Snapshot (NewSnapshots) saves and restores the cluster's state; nil
	// leaves it out.
	Snapshot pb.SnapshotServer
}

// NewServer returns the agent's gRPC server with its interceptor chain,
// message bounds and keepalive policy, serving svcs, grpc.health.v1 and
// reflection. The agent serves and stops it.
func NewServer(cfg ServerConfig, svcs Services) *grpc.Server {
	opts := Interceptors(cfg)
	if cfg.TLS != nil {
		log := cfg.Logger
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		opts = append(opts, grpc.Creds(tlsconf.ServerCredentials(cfg.TLS, log)))
	}
	s := grpc.NewServer(append(opts,
		grpc.MaxRecvMsgSize(MaxRecvMessage),
		grpc.MaxSendMsgSize(maxMessage),
		grpc.ForceServerCodecV2(newRegistryCodec()),
		experimental.BufferPool(wirecodec.BufferPool()),
		grpc.NumStreamWorkers(streamWorkers),
		grpc.InitialWindowSize(StreamWindow),
		grpc.InitialConnWindowSize(ConnWindow),
		// Notice dead session holders behind a silent network within ~15 s;
		// a crashed process closes its socket and is noticed at once.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)...)
	pb.RegisterRegistryServer(s, svcs.Registry)
	pb.RegisterStatusServer(s, svcs.Status)
	pb.RegisterInternalServer(s, svcs.Internal)
	pb.RegisterBlobsServer(s, svcs.Blobs)
	// A peer's shard is stored from the buffer it arrived in.
	s.RegisterService(wirecodec.BorrowIn(&pb.Shards_ServiceDesc, "PutShard", "payload"), svcs.Shards)
	if svcs.ACL != nil {
		pb.RegisterACLServer(s, svcs.ACL)
	}
	if svcs.Keyring != nil {
		pb.RegisterKeyringServer(s, svcs.Keyring)
	}
	if svcs.KeyringPeer != nil {
		pb.RegisterKeyringPeerServer(s, svcs.KeyringPeer)
	}
	if svcs.Snapshot != nil {
		pb.RegisterSnapshotServer(s, svcs.Snapshot)
	}
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s
}

// Interceptors is the agent's server chain. Panic recovery comes first, so
// that a panic anywhere below it (a handler or a later interceptor) fails
// one call instead of the agent.
func Interceptors(cfg ServerConfig) []grpc.ServerOption {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &chain{cfg}
	unary := []grpc.UnaryServerInterceptor{c.recoverUnary, c.unaryInterceptor, c.unaryPeerAuth}
	stream := []grpc.StreamServerInterceptor{c.recoverStream, c.streamInterceptor, c.streamPeerAuth}
	if cfg.ACL != nil {
		unary = append(unary, cfg.ACL.Unary)
		stream = append(stream, cfg.ACL.Stream)
	}
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...)}
}

// chain holds what the interceptors use.
type chain struct{ cfg ServerConfig }

// errInternal is what a caller sees when a handler panics; the panic value
// and the stack stay in the agent's log.
var errInternal = status.Error(codes.Internal, "internal error")

func (c *chain) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, c.recovered(ctx, info.FullMethod, r)
		}
	}()
	return h(ctx, req)
}

func (c *chain) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = c.recovered(ss.Context(), info.FullMethod, r)
		}
	}()
	return h(srv, ss)
}

// recovered logs a handler's panic with its stack, counts it and returns
// the error sent to the caller.
func (c *chain) recovered(ctx context.Context, method string, r any) error {
	c.cfg.Logger.LogAttrs(ctx, slog.LevelError, "panic in gRPC handler",
		slog.String("method", method), slog.Any("panic", r), slog.String("stack", string(debug.Stack())))
	c.cfg.Metrics.ObservePanic(method)
	return errInternal
}

// unaryInterceptor refuses a request that was not a message of its type
// (undecodable) or holds a malformed Duration or Timestamp (checkTimes),
// maps errors through the API's one code table and counts requests by
// method and code.
func (c *chain) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	err = undecodable(req)
	if m, ok := req.(proto.Message); ok && err == nil {
		err = checkTimes(m.ProtoReflect(), "")
	}
	if err == nil {
		resp, err = h(ctx, req)
	}
	err = apierr.ToStatus(err)
	c.cfg.Metrics.ObserveRPC(info.FullMethod, status.Code(err), start)
	return resp, err
}

func (c *chain) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	start := time.Now()
	err := apierr.ToStatus(h(srv, decodedStream{ss}))
	c.cfg.Metrics.ObserveRPC(info.FullMethod, status.Code(err), start)
	return err
}

// Agent-to-agent API: the services below are served only to agents of this
// cluster. A caller proves it is one with an agent proof (agentproof.go),
// sent by every peer connection (node's peerConns). An
// agent that has not applied the cluster's ClusterInit yet serves them to
// no one; joining needs none of them (it runs over gossip and the Raft
// transport).

// peerOnlyServices are the services that only agents may call.
var peerOnlyServices = map[string]bool{
	pb.Internal_ServiceDesc.ServiceName:    true,
	pb.Shards_ServiceDesc.ServiceName:      true,
	pb.KeyringPeer_ServiceDesc.ServiceName: true,
}

// errNotAnAgent answers a call of the agent-to-agent API that does not
// carry this cluster's proof.
var errNotAnAgent = status.Error(codes.PermissionDenied, "agent-to-agent API: caller is not an agent of this cluster")

// errNoClusterSecretYet answers a call of the agent-to-agent API on an
// agent that has not yet applied the cluster's ClusterInit (it is still
// joining): it cannot tell an agent from a stranger yet, and will within
// moments, so the caller retries.
var errNoClusterSecretYet = status.Error(codes.Unavailable, "agent-to-agent API: this agent has not yet received the cluster's secret (it is still joining); retry")

// errNotAnAgentCertificate answers, on a TLS agent, a call of the
// agent-to-agent API over a connection without an agent certificate.
var errNotAnAgentCertificate = status.Error(codes.PermissionDenied,
	"agent-to-agent API: caller's certificate is not an agent certificate (it lacks the DNS name "+pki.AgentDNSName+")")

// AgentCertificate reports whether the call came over TLS from a peer
// holding an agent certificate.
func AgentCertificate(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	return ok && len(info.State.PeerCertificates) > 0 && pki.IsAgent(info.State.PeerCertificates[0])
}

// PeerOnly reports whether fullMethod ("/zrpc.v1.Shards/PutShard") belongs
// to an agent-to-agent service.
func PeerOnly(fullMethod string) bool {
	svc, _, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	return ok && peerOnlyServices[svc]
}

// checkPeer lets a call of the agent-to-agent API through only with this
// cluster's proof for that method, compared in constant time.
func (c *chain) checkPeer(ctx context.Context, fullMethod string) error {
	if !PeerOnly(fullMethod) {
		return nil
	}
	if c.cfg.TLS != nil && !AgentCertificate(ctx) {
		return errNotAnAgentCertificate
	}
	if c.cfg.Proofs.Secret == nil || c.cfg.Proofs.Secret() == nil {
		return errNoClusterSecretYet
	}
	if !c.cfg.Proofs.Has(ctx, fullMethod) {
		return errNotAnAgent
	}
	return nil
}

func (c *chain) unaryPeerAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := c.checkPeer(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (c *chain) streamPeerAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := c.checkPeer(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}
