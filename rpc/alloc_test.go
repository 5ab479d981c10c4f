package rpc_test

import (
	"context"
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/rpc"
)

// maxExtraAllocs is how many more allocations a unary call may make, client
// and server together, through zrpc's default chains (propagation, breaker,
// retry, timeout; recover, metrics, shedding, timeout) than through plain
// grpc-go.
const maxExtraAllocs = 5

// allocsPerCall is the average number of allocations, in this whole
// process, of one 100-byte echo call on conn.
func allocsPerCall(t *testing.T, conn *grpc.ClientConn) float64 {
	t.Helper()
	payload := &wrapperspb.BytesValue{Value: make([]byte, 100)}
	out := new(wrapperspb.BytesValue)
	call := func() {
		if err := conn.Invoke(context.Background(), grpctest.EchoMethod, payload, out); err != nil {
			t.Fatal(err)
		}
	}
	for range 100 { // connections made, pools and per-method state warm
		call()
	}
	return testing.AllocsPerRun(2000, call)
}

// leastAllocsPerCall returns allocsPerCall of a and of b, each the least
// of three interleaved runs. The count is of the whole process: on a
// loaded machine timers and the shared deadline slots of slower calls add
// to it now and then; the least run is the calls' own cost.
func leastAllocsPerCall(t *testing.T, a, b *grpc.ClientConn) (float64, float64) {
	t.Helper()
	ra, rb := math.Inf(1), math.Inf(1)
	for range 3 {
		ra = min(ra, allocsPerCall(t, a))
		rb = min(rb, allocsPerCall(t, b))
	}
	return ra, rb
}

// startEchoServer starts an rpc.Server with its default chain serving
// the echo method on 127.0.0.1, stopped when the test ends.
func startEchoServer(t *testing.T) *rpc.Server {
	t.Helper()
	srv, err := rpc.NewServer(rpc.ServerConfig{Name: "alloc.rpc", ListenOn: "127.0.0.1:0", NoRegister: true},
		rpc.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	echoBytes(srv.GRPC())
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	return srv
}

func TestDefaultChainsAllocateAtMostFiveMorePerCallThanPlainGRPC(t *testing.T) {
	if testing.Short() {
		t.Skip("counts allocations of real calls")
	}
	plainAddr := grpctest.Serve(t, echoBytes)
	plain, err := grpc.NewClient(plainAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()

	srv := startEchoServer(t)
	zconn, err := rpc.Dial(context.Background(), "direct:///"+srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer zconn.Close()

	base, got := leastAllocsPerCall(t, plain, zconn)
	t.Logf("allocations per call: plain grpc-go %.1f, zrpc %.1f", base, got)
	if got > base+maxExtraAllocs {
		t.Errorf("a call through zrpc's default chains allocates %.1f times, plain grpc-go %.1f: more than %d extra", got, base, maxExtraAllocs)
	}
}

// A call through rpc.Dial's default client chain (propagation, breaker,
// retry, timeout, the p2c picker) allocates at most once more than one
// through a plain grpc-go client, against the same server: the call's
// context under the shared timeout slot. The retry stage learns each
// attempt's instance from the picker's note, adding no call option.
func TestDefaultClientChainAllocatesAtMostOnceMorePerCallThanAPlainClient(t *testing.T) {
	if testing.Short() {
		t.Skip("counts allocations of real calls")
	}
	if raceEnabled {
		t.Skip("the race detector drops pooled objects at random, so pools allocate")
	}
	srv := startEchoServer(t)
	plain, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	zconn, err := rpc.Dial(context.Background(), "direct:///"+srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer zconn.Close()

	base, got := leastAllocsPerCall(t, plain, zconn)
	t.Logf("allocations per call against zrpc's server: plain grpc-go client %.1f, rpc.Dial %.1f", base, got)
	if got > base+1 {
		t.Errorf("a call through rpc.Dial's default chain allocates %.1f times, a plain grpc-go client's %.1f: more than 1 extra", got, base)
	}
}
