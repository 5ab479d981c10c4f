// Package grpctest starts real gRPC servers on loopback for tests: each
// serves grpc.health.v1 and counts the unary calls it handles (so a test
// can see where a client's calls went) and the pings its clients send.
// RegisterEcho adds the one test service (test.Echo) that tests call
// through their own servers.
// ClientWindows and ServerWindows read the flow-control windows one side
// of a connection grants; CountPings counts the PINGs a server's clients
// send.
package grpctest

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Server is one running test server.
type Server struct {
	Addr  string
	Calls atomic.Int64
	// Pings counts the HTTP/2 PINGs its clients sent (CountPings).
	Pings *atomic.Int64
}

// StartHealthServer starts a grpc.health.v1 server on 127.0.0.1 whose
// statuses the test sets on hs; it stops when the test ends.
func StartHealthServer(t testing.TB) (addr string, hs *health.Server) {
	t.Helper()
	hs = health.NewServer()
	return serveOn(t, listen(t), func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) }), hs
}

// StartHealthServers starts n servers on 127.0.0.1; they stop when the test
// ends.
func StartHealthServers(t testing.TB, n int) []*Server {
	t.Helper()
	servers := make([]*Server, n)
	for i := range servers {
		ts := &Server{}
		count := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			ts.Calls.Add(1)
			return h(ctx, req)
		}
		var lis net.Listener
		lis, ts.Pings = CountPings(listen(t))
		ts.Addr = serveOn(t, lis, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, health.NewServer()) }, grpc.UnaryInterceptor(count))
		servers[i] = ts
	}
	return servers
}
