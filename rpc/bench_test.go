package rpc_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/rpc"
)

// echoBytes registers the echo service, which returns its ~100-byte input.
func echoBytes(s *grpc.Server) { grpctest.RegisterEcho(s, nil) }

// runEcho drives conn with callers goroutines until b.N calls are done.
func runEcho(b *testing.B, conn *grpc.ClientConn, callers int) {
	payload := &wrapperspb.BytesValue{Value: make([]byte, 100)}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := new(wrapperspb.BytesValue)
			for next.Add(1) <= int64(b.N) {
				if err := conn.Invoke(context.Background(), grpctest.EchoMethod, payload, out); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}

// BenchmarkEcho compares plain grpc-go with a zrpc server and client with
// their full default chains, in the same run: unary echo of 100 bytes over
// loopback, one shared client connection.
func BenchmarkEcho(b *testing.B) {
	for _, callers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("grpc/callers=%d", callers), func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			s := grpc.NewServer()
			echoBytes(s)
			go s.Serve(ln)
			defer s.Stop()
			conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			runEcho(b, conn, callers)
		})
		b.Run(fmt.Sprintf("zrpc/callers=%d", callers), func(b *testing.B) {
			srv, err := rpc.NewServer(rpc.ServerConfig{Name: "bench.rpc", ListenOn: "127.0.0.1:0", NoRegister: true})
			if err != nil {
				b.Fatal(err)
			}
			echoBytes(srv.GRPC())
			if err := srv.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer srv.Stop(context.Background())
			conn, err := rpc.Dial(context.Background(), "direct:///"+srv.Addr())
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			runEcho(b, conn, callers)
		})
	}
}
