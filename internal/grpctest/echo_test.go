package grpctest

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestEchoAnswersThroughTheServersInterceptors: the echo service returns
// its request (or the handler's answer), runs behind the server's
// interceptors under EchoMethod, and takes an emptypb.Empty too.
func TestEchoAnswersThroughTheServersInterceptors(t *testing.T) {
	var seen atomic.Value
	ic := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		seen.Store(info.FullMethod)
		return h(ctx, req)
	}
	echo := grpc.NewServer(grpc.UnaryInterceptor(ic))
	RegisterEcho(echo, nil)
	upper := grpc.NewServer()
	RegisterEcho(upper, func(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		return wrapperspb.Bytes(append([]byte("re: "), in.Value...)), nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	conn := serve(t, echo)
	out := new(wrapperspb.BytesValue)
	if err := conn.Invoke(ctx, EchoMethod, wrapperspb.Bytes([]byte("ping")), out); err != nil || string(out.Value) != "ping" {
		t.Fatalf("echo = %q, %v; want ping", out.Value, err)
	}
	if got := seen.Load(); got != EchoMethod {
		t.Errorf("the interceptor saw %v, want %q", got, EchoMethod)
	}
	if err := conn.Invoke(ctx, EchoMethod, &emptypb.Empty{}, &emptypb.Empty{}); err != nil {
		t.Errorf("echo of an Empty: %v", err)
	}
	if err := serve(t, upper).Invoke(ctx, EchoMethod, wrapperspb.Bytes([]byte("ping")), out); err != nil || string(out.Value) != "re: ping" {
		t.Fatalf("echo with a handler = %q, %v; want %q", out.Value, err, "re: ping")
	}
}

// serve serves s on loopback until the test ends and returns a client.
func serve(t *testing.T, s *grpc.Server) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
