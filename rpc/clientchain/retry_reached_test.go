package clientchain

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// hardStopPair serves grpc.health.v1 on two loopback servers. The first
// call to arrive at either blocks until that server is hard-stopped (its
// connection drops mid-call, so grpc-go answers Unavailable after the
// server ran the handler); later calls succeed. runs counts handler runs.
type hardStopPair struct {
	addrs   []string
	servers []*grpc.Server
	runs    atomic.Int32
	first   chan int // the index of the server that got the first call
}

func startHardStopPair(t *testing.T) *hardStopPair {
	t.Helper()
	p := &hardStopPair{first: make(chan int, 1)}
	var once sync.Once
	for i := range 2 {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			p.runs.Add(1)
			blocked := false
			once.Do(func() { blocked = true })
			if blocked {
				p.first <- i
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return h(ctx, req)
		}))
		healthpb.RegisterHealthServer(srv, health.NewServer())
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
		p.addrs = append(p.addrs, lis.Addr().String())
		p.servers = append(p.servers, srv)
	}
	return p
}

// call makes one Check through the default chain with idempotent as the
// retry stage's idempotent methods, hard-stopping the server that gets the
// first attempt while it runs.
func (p *hardStopPair) call(t *testing.T, idempotent []string) error {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Registerer = prometheus.NewRegistry()
	cfg.Retry.Rand = func() float64 { return 0 }
	cfg.Retry.Idempotent = idempotent
	cfg.NoBreaker = true
	cfg.Timeout = 10 * time.Second
	cc := dialRoundRobin(t, cfg, p.addrs...)
	go func() {
		select {
		case i := <-p.first:
			p.servers[i].Stop()
		case <-time.After(20 * time.Second):
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	return err
}

func TestRetryDoesNotResendNonIdempotentCallThatReachedAServer(t *testing.T) {
	p := startHardStopPair(t)
	err := p.call(t, nil)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("call whose server stopped mid-call = %v, want Unavailable", err)
	}
	if got := p.runs.Load(); got != 1 {
		t.Fatalf("handler ran %d times, want 1: a non-idempotent call that reached a server was sent again", got)
	}
}

func TestRetryResendsIdempotentCallThatReachedAServer(t *testing.T) {
	p := startHardStopPair(t)
	if err := p.call(t, []string{"/grpc.health.v1.Health/Check"}); err != nil {
		t.Fatalf("idempotent call after its server stopped mid-call: %v, want success on the other server", err)
	}
	if got := p.runs.Load(); got != 2 {
		t.Fatalf("handler ran %d times, want 2 (the stopped attempt and the retry)", got)
	}
}
