package rpc_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/rpc"
	"github.com/zrpcio/zrpc/rpc/balancer"
	"github.com/zrpcio/zrpc/testcluster"
)

// echoService answers the echo service's calls after delay and counts
// them.
type echoService struct {
	calls atomic.Int64
	delay time.Duration
}

func (e *echoService) register(s *grpc.Server) {
	grpctest.RegisterEcho(s, func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		e.calls.Add(1)
		select {
		case <-time.After(e.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return in, nil
	})
}

func call(ctx context.Context, conn *grpc.ClientConn) error {
	return conn.Invoke(ctx, grpctest.EchoMethod, &emptypb.Empty{}, &emptypb.Empty{})
}

// startEcho starts a registered echo server of service on agent addr.
func startEcho(t *testing.T, agent, service, id string, weight uint32, delay time.Duration) (*rpc.Server, *echoService) {
	t.Helper()
	srv, err := rpc.NewServer(rpc.ServerConfig{Name: service, ListenOn: "127.0.0.1:0", ID: id, Weight: weight,
		Agents: []string{agent}, DrainDelay: 200 * time.Millisecond}, rpc.WithServerLogger(testlog.New(t, id)))
	if err != nil {
		t.Fatal(err)
	}
	e := &echoService{delay: delay}
	e.register(srv.GRPC())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	return srv, e
}

func TestDialSpreadsWeightsAndFindsNewInstances(t *testing.T) {
	c := testcluster.New(t, 1)
	agent := c.GRPCAddr(0)
	_, a := startEcho(t, agent, "echo.rpc", "a", 300, 0)
	_, b := startEcho(t, agent, "echo.rpc", "b", 100, 0)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := rpc.Dial(ctx, "zrpc:///echo.rpc", rpc.WithAgents(agent), rpc.WithBalancer(balancer.WeightedRoundRobin), rpc.WithWaitReady())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c.WaitFor(10*time.Second, "both instances resolved", func() bool {
		call(ctx, conn)
		return a.calls.Load() > 0 && b.calls.Load() > 0
	})
	a0, b0 := a.calls.Load(), b.calls.Load()
	for i := 0; i < 400; i++ {
		if err := call(ctx, conn); err != nil {
			t.Fatal(err)
		}
	}
	da, db := a.calls.Load()-a0, b.calls.Load()-b0
	if da < 270 || da > 330 || da+db != 400 {
		t.Fatalf("weights 3:1 gave %d:%d over 400 calls, want about 300:100", da, db)
	}

	// A new instance gets traffic.
	_, n := startEcho(t, agent, "echo.rpc", "new", 100, 0)
	c.WaitFor(10*time.Second, "the new instance gets calls", func() bool {
		if err := call(ctx, conn); err != nil {
			t.Fatal(err)
		}
		return n.calls.Load() > 0
	})
}

func TestGracefulStopDropsNoCall(t *testing.T) {
	c := testcluster.New(t, 1)
	agent := c.GRPCAddr(0)
	stopping, slow := startEcho(t, agent, "slow.rpc", "stopping", 100, 300*time.Millisecond)
	_, other := startEcho(t, agent, "slow.rpc", "other", 100, 300*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := rpc.Dial(ctx, "zrpc:///slow.rpc", rpc.WithAgents(agent), rpc.WithBalancer(balancer.RoundRobin), rpc.WithWaitReady())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c.WaitFor(10*time.Second, "both instances get calls", func() bool {
		call(ctx, conn)
		return slow.calls.Load() > 0 && other.calls.Load() > 0
	})

	// Keep 8 callers busy while one instance stops: every call must succeed.
	before := slow.calls.Load()
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := call(ctx, conn); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprint(err))
				}
			}
		}()
	}
	c.WaitFor(10*time.Second, "calls in flight on the stopping instance", func() bool { return slow.calls.Load() >= before+4 })
	if err := stopping.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d calls failed during a graceful stop; first: %v", n, firstErr.Load())
	}
}

func TestServerDefaultChainAuthAndTimeout(t *testing.T) {
	srv, err := rpc.NewServer(rpc.ServerConfig{Name: "auth.rpc", ListenOn: "127.0.0.1:0", NoRegister: true,
		Tokens: []string{"s3cret"}, Timeout: 50 * time.Millisecond}, rpc.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	e := &echoService{delay: 2 * time.Second}
	e.register(srv.GRPC())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(ctx)
	conn, err := rpc.Dial(ctx, "direct:///"+srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := call(ctx, conn); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("call without a token: %v, want Unauthenticated", err)
	}
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret")
	// The handler takes 2s; the server's 50ms timeout ends it.
	if err := call(authed, conn); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("slow call with a token: %v, want DeadlineExceeded from the server timeout", err)
	}
}

// A server that dies without deregistering costs no failed call: the
// client's retry goes to another instance, and the instance leaves the
// registry when its session dies with it.
func TestKilledServerCausesNoFailedCalls(t *testing.T) {
	c := testcluster.New(t, 1)
	agent := c.GRPCAddr(0)
	_, a := startEcho(t, agent, "kill.rpc", "a", 100, 0)
	_, b := startEcho(t, agent, "kill.rpc", "b", 100, 0)

	// The victim: a plain gRPC server registered through its own session,
	// so that killing it can drop both at once, as a process death does.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	victimSrv := grpc.NewServer()
	victim := &echoService{}
	victim.register(victimSrv)
	go victimSrv.Serve(ln)
	agents, err := client.New(client.Config{Endpoints: []string{agent}})
	if err != nil {
		t.Fatal(err)
	}
	defer agents.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := agents.Session(ctx, "victim")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sess.Register(ctx, &pb.Instance{Service: "kill.rpc", Id: "victim", Address: ln.Addr().String()}); err != nil {
		t.Fatal(err)
	}

	// Echo is idempotent: a call the dying server may have taken is sent
	// again to another instance (a non-idempotent one would fail instead;
	// clientchain's retry tests cover that).
	conn, err := rpc.Dial(ctx, "zrpc:///kill.rpc", rpc.WithAgents(agent), rpc.WithBalancer(balancer.RoundRobin), rpc.WithWaitReady(),
		rpc.WithIdempotent(grpctest.EchoMethod))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c.WaitFor(10*time.Second, "all three instances get calls", func() bool {
		call(ctx, conn)
		return a.calls.Load() > 0 && b.calls.Load() > 0 && victim.calls.Load() > 0
	})

	victimSrv.Stop() // the process dies: its server first...
	var failed int
	for i := 0; i < 100; i++ {
		if err := call(ctx, conn); err != nil {
			failed++
		}
		if i == 10 {
			sess.Close() // ...and its session with it
		}
	}
	if failed > 0 {
		t.Fatalf("%d of 100 calls failed after an instance died", failed)
	}
	c.WaitFor(10*time.Second, "the dead instance left the registry", func() bool {
		for _, in := range instances(t, c, "kill.rpc") {
			if in.Id == "victim" {
				return false
			}
		}
		return true
	})
}

// TestDialWaitReadySaysWhyNoInstanceIsReady: WithWaitReady's error says
// what the registry holds: no instance, or the health of the ones there.
func TestDialWaitReadySaysWhyNoInstanceIsReady(t *testing.T) {
	c := testcluster.New(t, 1)
	agent := c.GRPCAddr(0)
	dial := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn, err := rpc.Dial(ctx, "zrpc:///none.rpc", rpc.WithAgents(agent), rpc.WithWaitReady())
		if err == nil {
			conn.Close()
		}
		return err
	}
	if err := dial(); err == nil || !strings.Contains(err.Error(), "no ready instance: the registry has no instance of none.rpc") {
		t.Fatalf("dial of a service with no instance: %v", err)
	}
	cl, err := client.New(client.Config{Endpoints: []string{agent}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	down := &pb.Instance{Service: "none.rpc", Id: "d1", Address: "127.0.0.1:1", Check: &pb.Check{Grpc: true, Interval: durationpb.New(time.Hour)}}
	if _, _, err := cl.Register(ctx, down); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err == nil || !strings.Contains(err.Error(), "the one instance of none.rpc is not routable: d1 critical") {
		t.Fatalf("dial of a service whose one instance is critical: %v", err)
	}
}

// With no agent to watch the registry through, WithWaitReady's error says
// so, rather than only that its context ended.
func TestDialWaitReadySaysWhenNoAgentAnswers(t *testing.T) {
	agent := clienttest.ClosedAddr(t)
	// Time for the watch to fail at least once (at once on loopback).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := rpc.Dial(ctx, "zrpc:///none.rpc", rpc.WithAgents(agent), rpc.WithWaitReady())
	if err == nil {
		conn.Close()
		t.Fatal("dial through an agent that is not there succeeded")
	}
	if want := "no ready instance: watch service none.rpc: "; !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), agent) {
		t.Fatalf("dial through an agent that is not there: %v; want %q and the agent's address", err, want)
	}
}
