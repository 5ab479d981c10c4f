package grpcapi

import (
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// serveTest serves svcs, as an agent's API server with the tests' metrics
// and no cluster secret, on a loopback port until the test ends, and
// returns its address.
func serveTest(tb testing.TB, svcs Services) string {
	tb.Helper()
	srv := NewServer(ServerConfig{Metrics: &watchMetrics{}, Proofs: AgentProofs{Secret: func() []byte { return nil }}}, svcs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(lis)
	}()
	tb.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return lis.Addr().String()
}

// dialTest is a plaintext connection to addr, closed when the test ends.
func dialTest(tb testing.TB, addr string) *grpc.ClientConn {
	tb.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return cc
}
