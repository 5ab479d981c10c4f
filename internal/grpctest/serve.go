package grpctest

import (
	"net"
	"testing"

	"google.golang.org/grpc"
)

// Serve starts a gRPC server with opts on 127.0.0.1, lets register add its
// services, and returns its address. The server stops, and its Serve
// goroutine ends, when the test ends.
func Serve(t testing.TB, register func(*grpc.Server), opts ...grpc.ServerOption) string {
	t.Helper()
	return serveOn(t, listen(t), register, opts...)
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return lis
}

// serveOn is Serve on lis.
func serveOn(t testing.TB, lis net.Listener, register func(*grpc.Server), opts ...grpc.ServerOption) string {
	s := grpc.NewServer(opts...)
	register(s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return lis.Addr().String()
}
