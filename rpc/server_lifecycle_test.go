package rpc

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/teststack"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// sessionAgent is a fake agent's Session stream: it refuses the first
// `refuse` sessions with refuseCode (Unavailable if unset), opens the
// others, answers their registrations and keepalives, and, with
// holdDeregister, leaves deregistrations unanswered (an agent that hangs
// as the server stops). holdRegister leaves registrations unanswered too.
type sessionAgent struct {
	refuse         atomic.Int64
	refuseCode     codes.Code
	holdRegister   bool
	holdDeregister bool
	asked          atomic.Int64 // sessions asked for, refused or opened
	opened         atomic.Int64 // sessions opened
	registers      atomic.Int64 // registrations received
}

func (a *sessionAgent) serve(stream pb.Registry_SessionServer) error {
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	a.asked.Add(1)
	if a.refuse.Add(-1) >= 0 {
		if a.refuseCode != codes.OK {
			return status.Error(a.refuseCode, "refused by the test")
		}
		return status.Error(codes.Unavailable, "agent starting")
	}
	n := a.opened.Add(1)
	if err := stream.Send(&pb.SessionResponse{Seq: req.GetSeq(), Session: fmt.Sprintf("s-%d", n)}); err != nil {
		return err
	}
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		resp := &pb.SessionResponse{Seq: req.GetSeq()}
		switch {
		case req.GetRegister() != nil:
			a.registers.Add(1)
			if a.holdRegister {
				continue
			}
			resp.Instance = req.GetRegister().GetInstance()
		case req.GetDeregister() != nil && a.holdDeregister:
			continue
		}
		if err := stream.Send(resp); err != nil {
			return nil
		}
	}
}

// startSessionAgent serves a on a fake agent until the test ends.
func startSessionAgent(t *testing.T, a *sessionAgent) string {
	t.Setenv(TokenEnv, "")
	return (&clienttest.Agent{OnSession: a.serve}).Start(t).Addr
}

// newLifecycleServer builds a user.rpc server registering with the agent
// at addr, its call timeout off; release ends the calls of its echo
// service, which say they began on entered.
func newLifecycleServer(t *testing.T, addr string, entered chan<- struct{}, release <-chan struct{}) *Server {
	t.Helper()
	srv, err := NewServer(ServerConfig{
		Name: "user.rpc", ListenOn: "127.0.0.1:0", ID: "u1", Agents: []string{addr},
		DrainDelay: 10 * time.Millisecond, StopTimeout: time.Minute, Timeout: -1,
	}, WithServerLogger(testlog.New(t, "server")), WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	grpctest.RegisterEcho(srv.GRPC(), func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		entered <- struct{}{}
		select {
		case <-release:
			return in, nil
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	})
	return srv
}

// TestStopDrainsCallsWhenTheAgentLeavesTheDeregistrationUnanswered: an
// agent that hangs as the server stops costs Stop the deregistration's
// bound, not its whole context: the calls in flight then finish within
// the graceful stop, where the deregistration had waited until Stop's
// context ended and the calls were cancelled.
func TestStopDrainsCallsWhenTheAgentLeavesTheDeregistrationUnanswered(t *testing.T) {
	old := deregisterTimeout
	deregisterTimeout = 100 * time.Millisecond
	t.Cleanup(func() { deregisterTimeout = old })
	addr := startSessionAgent(t, &sessionAgent{holdDeregister: true})
	entered, release := make(chan struct{}, 1), make(chan struct{})
	srv := newLifecycleServer(t, addr, entered, release)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	called := make(chan error, 1)
	go func() {
		called <- conn.Invoke(ctx, grpctest.EchoMethod, wrapperspb.Bytes([]byte("x")), new(wrapperspb.BytesValue))
	}()
	<-entered

	stopCtx, cancelStop := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelStop()
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Stop(stopCtx) }()
	// The graceful stop has begun once the listener is closed.
	testwait.For(t, 20*time.Second, "the server to stop accepting connections", func() bool {
		c, err := net.DialTimeout("tcp", srv.Addr(), time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	close(release)
	if err := <-called; err != nil {
		t.Fatalf("the call in flight at Stop = %v, want it finished by the graceful stop", err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// TestServerStartsOnce: Start after a Start, successful or failed, or
// after Stop, returns an error and opens no session. A second Start after
// a failed one had registered an instance nothing served (the failure
// had stopped the gRPC server, which then served nothing more).
func TestServerStartsOnce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		refuse int64 // sessions the agent refuses
		before func(t *testing.T, srv *Server)
	}{
		{name: "after a Start", before: func(t *testing.T, srv *Server) {
			if err := srv.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "after a failed Start", refuse: 1, before: func(t *testing.T, srv *Server) {
			if err := srv.Start(context.Background()); err == nil {
				t.Fatal("Start succeeded though the agent denied the session")
			}
		}},
		{name: "after Stop", before: func(t *testing.T, srv *Server) {
			if err := srv.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &sessionAgent{refuseCode: codes.PermissionDenied}
			a.refuse.Store(tc.refuse)
			srv := newLifecycleServer(t, startSessionAgent(t, a), make(chan struct{}, 1), nil)
			t.Cleanup(func() { srv.Stop(context.Background()) })
			tc.before(t, srv)
			opened := a.opened.Load()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := srv.Start(ctx)
			if err == nil || !strings.Contains(err.Error(), "a Server starts once") {
				t.Fatalf("Start %s = %v, want an error saying a Server starts once", tc.name, err)
			}
			if got := a.opened.Load(); got != opened {
				t.Fatalf("Start %s opened %d sessions, want none", tc.name, got-opened)
			}
		})
	}
}

// TestStopDuringStartEndsTheRegistration: Stop, called while Start waits
// for its registration, ends it and returns without waiting for Start's
// own context; Start returns an error.
func TestStopDuringStartEndsTheRegistration(t *testing.T) {
	a := &sessionAgent{holdRegister: true}
	srv := newLifecycleServer(t, startSessionAgent(t, a), make(chan struct{}, 1), nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	started := make(chan error, 1)
	go func() { started <- srv.Start(ctx) }()
	testwait.For(t, 20*time.Second, "the registration to reach the agent", func() bool { return a.registers.Load() > 0 })
	stopCtx, cancelStop := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelStop()
	if err := srv.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	if err := stopCtx.Err(); err != nil {
		t.Fatalf("Stop waited for Start until Stop's context ended: %v", err)
	}
	select {
	case err := <-started:
		if err == nil {
			t.Fatal("Start succeeded though Stop came while it registered")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Start had not returned 20s after Stop")
	}
}

// TestFailedStartEndsTheSpanBatcher: a Start that fails (its agent
// denied the session) ends the span batcher of the Telemetry section,
// whose goroutine had run until a Stop that a main giving up on the
// failed Start never calls.
func TestFailedStartEndsTheSpanBatcher(t *testing.T) {
	a := &sessionAgent{refuseCode: codes.PermissionDenied}
	a.refuse.Store(1)
	addr := startSessionAgent(t, a)
	before := len(teststack.Goroutines("", spanBatcher))
	srv, err := NewServer(ServerConfig{
		Name: "user.rpc", ListenOn: "127.0.0.1:0", Agents: []string{addr},
		Telemetry: TelemetryConfig{Endpoint: "127.0.0.1:4317", Insecure: true},
	}, WithServerLogger(testlog.New(t, "server")), WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err == nil {
		t.Fatal("Start succeeded though the agent denied the session")
	}
	testwait.For(t, 10*time.Second, "the span batcher's goroutine to end", func() bool {
		return len(teststack.Goroutines("", spanBatcher)) <= before
	})
}
