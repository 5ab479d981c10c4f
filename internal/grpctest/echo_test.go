package grpctest

import (
	"context"
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
	echo := Serve(t, func(s *grpc.Server) { RegisterEcho(s, nil) }, grpc.UnaryInterceptor(ic))
	upper := Serve(t, func(s *grpc.Server) {
		RegisterEcho(s, func(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
			return wrapperspb.Bytes(append([]byte("re: "), in.Value...)), nil
		})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	conn := dial(t, echo)
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
	if err := dial(t, upper).Invoke(ctx, EchoMethod, wrapperspb.Bytes([]byte("ping")), out); err != nil || string(out.Value) != "re: ping" {
		t.Fatalf("echo with a handler = %q, %v; want %q", out.Value, err, "re: ping")
	}
}

// dial returns a client of the server at addr, closed when the test ends.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
