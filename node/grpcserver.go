package node

import (
	"context"
	"log/slog"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
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
		grpc.ChainUnaryInterceptor(n.recoverUnary, n.unaryInterceptor),
		grpc.ChainStreamInterceptor(n.recoverStream, n.streamInterceptor),
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
