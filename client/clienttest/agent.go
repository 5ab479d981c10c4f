// Package clienttest runs a fake agent in process for tests of packages that
// talk to agents (client, cli): a gRPC server on 127.0.0.1 whose Registry and
// Status answers are set by the test, one hook per RPC. It is not an agent:
// it stores nothing and has no Raft; a real in-process cluster is the job of
// the testcluster package.
package clienttest

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/grpctest"
)

// Agent is a fake agent. Set the hooks a test needs before Start; an RPC
// whose hook is nil answers codes.Unimplemented. Hooks run on gRPC server
// goroutines, concurrently.
type Agent struct {
	zrpcpb.UnimplementedRegistryServer
	zrpcpb.UnimplementedStatusServer

	OnRegister   func(context.Context, *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error)
	OnDeregister func(context.Context, *zrpcpb.DeregisterRequest) (*zrpcpb.DeregisterResponse, error)
	OnRenewTTL   func(context.Context, *zrpcpb.RenewTTLRequest) (*zrpcpb.RenewTTLResponse, error)
	OnGet        func(context.Context, *zrpcpb.GetRequest) (*zrpcpb.GetResponse, error)
	OnList       func(context.Context, *zrpcpb.ListRequest) (*zrpcpb.ListResponse, error)
	OnWatch      func(*zrpcpb.WatchRequest, zrpcpb.Registry_WatchServer) error
	OnWatchMany  func(zrpcpb.Registry_WatchManyServer) error
	OnSession    func(zrpcpb.Registry_SessionServer) error
	OnStatus     func(context.Context, *zrpcpb.StatusRequest) (*zrpcpb.StatusResponse, error)
	OnMembers    func(context.Context, *zrpcpb.MembersRequest) (*zrpcpb.MembersResponse, error)
	OnPeers      func(context.Context, *zrpcpb.PeersRequest) (*zrpcpb.PeersResponse, error)
	OnVersion    func(context.Context, *zrpcpb.VersionRequest) (*zrpcpb.VersionResponse, error)

	// Silent, when set, holds every call (a health check too) until the
	// caller gives up, while the connection stays open and answers
	// HTTP/2 pings: an agent stopped, or cut off by a network that drops
	// its packets, as the client sees it before keepalive gives up.
	Silent atomic.Bool

	// Addr is the address the agent serves on, set by Start.
	Addr string
	// Server is the agent's gRPC server; Server.Stop kills it mid-test.
	Server *grpc.Server

	calls        atomic.Int64
	healthChecks atomic.Int64
	pings        *atomic.Int64
}

// Start serves a on 127.0.0.1:0 until the test ends, and returns a.
func (a *Agent) Start(t testing.TB) *Agent {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	a.Addr = lis.Addr().String()
	lis, a.pings = grpctest.CountPings(lis)
	// Accept the client's keepalive pings (every 10s, also when idle).
	a.Server = grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
		MinTime: 5 * time.Second, PermitWithoutStream: true,
	}), grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == healthpb.Health_Check_FullMethodName {
			a.healthChecks.Add(1)
		}
		if a.Silent.Load() {
			<-ctx.Done()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return h(ctx, req)
	}), grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if a.Silent.Load() {
			<-ss.Context().Done()
			return status.FromContextError(ss.Context().Err()).Err()
		}
		return h(srv, ss)
	}))
	zrpcpb.RegisterRegistryServer(a.Server, a)
	zrpcpb.RegisterStatusServer(a.Server, a)
	healthpb.RegisterHealthServer(a.Server, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Server.Serve(lis)
	}()
	t.Cleanup(func() {
		a.Server.Stop()
		<-done
	})
	return a
}

// Calls returns how many RPCs the agent has received.
func (a *Agent) Calls() int64 { return a.calls.Load() }

// HealthChecks returns how many gRPC health checks the agent has
// received, answered or not.
func (a *Agent) HealthChecks() int64 { return a.healthChecks.Load() }

// Pings returns how many HTTP/2 PINGs clients have sent the agent (not
// their answers to its own).
func (a *Agent) Pings() int64 { return a.pings.Load() }

// ClosedAddr returns a local address where nothing listens.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// unary counts a call and runs hook, or fallback when hook is nil.
func unary[Req, Resp any](ctx context.Context, a *Agent, req Req,
	hook, fallback func(context.Context, Req) (Resp, error)) (Resp, error) {
	a.calls.Add(1)
	if hook == nil {
		return fallback(ctx, req)
	}
	return hook(ctx, req)
}
