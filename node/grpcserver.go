package node

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/storage"
)

// maxMessage bounds gRPC messages; a watch snapshot of a large registry is
// the biggest.
const maxMessage = 64 << 20

// maxRecvMessage bounds requests; a shard of the largest block is the
// biggest.
const maxRecvMessage = storage.MaxBlockSize + 1<<20

func newGRPCServer(n *Node) *grpc.Server {
	s := grpc.NewServer(append(n.interceptors(),
		grpc.MaxRecvMsgSize(maxRecvMessage),
		grpc.MaxSendMsgSize(maxMessage),
		// Notice dead session holders behind a silent network within ~15 s;
		// a crashed process closes its socket and is noticed at once.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)...)
	pb.RegisterRegistryServer(s, &registryServer{n: n})
	pb.RegisterStatusServer(s, &statusServer{n: n})
	pb.RegisterInternalServer(s, &internalServer{n: n})
	pb.RegisterBlobsServer(s, &blobsServer{n: n})
	pb.RegisterShardsServer(s, n.blobs.ShardServer())
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s
}

// interceptors is the agent's server chain. Panic recovery comes first, so
// that a panic anywhere below it (a handler or a later interceptor) fails
// one call instead of the agent.
func (n *Node) interceptors() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(n.recoverUnary, n.unaryInterceptor, n.unaryPeerAuth),
		grpc.ChainStreamInterceptor(n.recoverStream, n.streamInterceptor, n.streamPeerAuth),
	}
}

// errInternal is what a caller sees when a handler panics; the panic value
// and the stack stay in the agent's log.
var errInternal = status.Error(codes.Internal, "internal error")

func (n *Node) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, n.recovered(ctx, info.FullMethod, r)
		}
	}()
	return h(ctx, req)
}

func (n *Node) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = n.recovered(ss.Context(), info.FullMethod, r)
		}
	}()
	return h(srv, ss)
}

// recovered logs a handler's panic with its stack, counts it and returns
// the error sent to the caller.
func (n *Node) recovered(ctx context.Context, method string, r any) error {
	n.log.LogAttrs(ctx, slog.LevelError, "panic in gRPC handler",
		slog.String("method", method), slog.Any("panic", r), slog.String("stack", string(debug.Stack())))
	n.metrics.observePanic(method)
	return errInternal
}

// unaryInterceptor refuses a request holding a malformed Duration or
// Timestamp (checkTimes), maps errors through the API's one code table and
// counts requests by method and code.
func (n *Node) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	if m, ok := req.(proto.Message); ok {
		err = checkTimes(m.ProtoReflect(), "")
	}
	if err == nil {
		resp, err = h(ctx, req)
	}
	err = apierr.ToStatus(err)
	n.metrics.observeRPC(info.FullMethod, status.Code(err), start)
	return resp, err
}

func (n *Node) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	start := time.Now()
	err := apierr.ToStatus(h(srv, ss))
	n.metrics.observeRPC(info.FullMethod, status.Code(err), start)
	return err
}

// Agent-to-agent API: the services below are served only to agents of this
// cluster. A caller proves it is one with the x-zrpc-cluster-auth metadata:
// HMAC-SHA256 of the full method name keyed with the cluster's secret
// (raftstore ClusterInit), sent by every peer connection (forward.go). An
// agent that has not applied the cluster's ClusterInit yet serves them to
// no one; joining needs none of them (it runs over gossip and the Raft
// transport).

// peerOnlyServices are the services that only agents may call.
var peerOnlyServices = map[string]bool{
	pb.Internal_ServiceDesc.ServiceName: true,
	pb.Shards_ServiceDesc.ServiceName:   true,
}

const clusterAuthKey = "x-zrpc-cluster-auth"

// errNotAnAgent answers a call of the agent-to-agent API that does not
// carry this cluster's proof.
var errNotAnAgent = status.Error(codes.PermissionDenied, "agent-to-agent API: caller is not an agent of this cluster")

// peerOnly reports whether fullMethod ("/zrpc.v1.Shards/PutShard") belongs
// to an agent-to-agent service.
func peerOnly(fullMethod string) bool {
	svc, _, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	return ok && peerOnlyServices[svc]
}

// clusterAuth is the proof an agent sends with a call of fullMethod.
func clusterAuth(secret []byte, fullMethod string) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(fullMethod))
	return hex.EncodeToString(mac.Sum(nil))
}

// checkPeer lets a call of the agent-to-agent API through only with this
// cluster's proof for that method, compared in constant time.
func (n *Node) checkPeer(ctx context.Context, fullMethod string) error {
	if !peerOnly(fullMethod) {
		return nil
	}
	secret := n.store.FSM().ClusterSecret()
	if secret == nil {
		return errNotAnAgent
	}
	got := metadata.ValueFromIncomingContext(ctx, clusterAuthKey)
	if len(got) != 1 || !hmac.Equal([]byte(got[0]), []byte(clusterAuth(secret, fullMethod))) {
		return errNotAnAgent
	}
	return nil
}

func (n *Node) unaryPeerAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := n.checkPeer(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (n *Node) streamPeerAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := n.checkPeer(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}
