package clientchain

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
)

func TestChainOrderAndDefaults(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Retry.Rand = func() float64 { return 0 }
	cfg.Registerer = prometheus.NewRegistry()
	unary, stream := Chain(cfg)
	if stream == nil {
		t.Fatal("nil stream interceptor")
	}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("traceparent", "tp"))
	f := unsent(unavailable())
	if err := unary(ctx, "/s/M", nil, nil, nil, f.invoke); err != nil {
		t.Fatal(err)
	}
	if f.attempts() != 2 {
		t.Fatalf("attempts = %d, want 2 (retry on)", f.attempts())
	}
	for i, c := range f.ctxs {
		if c.Done() == nil {
			t.Errorf("attempt %d not bounded (timeout inside retry)", i+1)
		}
		if md, _ := metadata.FromOutgoingContext(c); len(md["traceparent"]) != 1 {
			t.Errorf("attempt %d outgoing metadata %v, want traceparent", i+1, md)
		}
	}
	got := gathered(t, cfg.Registerer.(prometheus.Gatherer), "zrpc_client_requests_total")
	if got["code=OK,method=/s/M"] != 1 || len(got) != 1 {
		t.Errorf("metrics = %v, want one OK call (retries not counted)", got)
	}
}

func TestChainEverythingOff(t *testing.T) {
	unary, _ := Chain(Config{NoPropagate: true, NoBreaker: true, NoRetry: true})
	ctx := context.Background()
	f := script(unavailable())
	err := unary(ctx, "/s/M", nil, nil, nil, f.invoke)
	if status.Code(err) != codes.Unavailable || f.attempts() != 1 {
		t.Fatalf("err %v attempts %d, want Unavailable after 1", err, f.attempts())
	}
	if f.ctxs[0] != ctx {
		t.Error("context changed with every stage off")
	}
}

func TestConfigValidate(t *testing.T) {
	bad := []Config{
		{Timeout: -1, NoBreaker: true, NoRetry: true},
		{StreamTimeout: -1, NoBreaker: true, NoRetry: true},
		{Breaker: BreakerConfig{K: -1}, NoRetry: true},
		{Retry: RetryConfig{MaxAttempts: -1}, NoBreaker: true},
		{Retry: RetryConfig{BaseBackoff: time.Second, MaxBackoff: time.Millisecond}, NoBreaker: true},
	}
	for _, c := range bad {
		if c.Validate() == nil {
			t.Errorf("%+v validated", c)
		}
		if _, _, err := NewChain(c); err == nil {
			t.Errorf("NewChain(%+v) succeeded", c)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Error(err)
	}
}

// startHealthServer serves grpc.health.v1 on 127.0.0.1:0; if down, every
// call fails with Unavailable as a dead instance's would.
func startHealthServer(t *testing.T, down bool) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if down {
		opts = append(opts, grpc.UnaryInterceptor(func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
			return nil, status.Error(codes.Unavailable, "instance down")
		}))
	}
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// dialRoundRobin connects to addrs, round robin, through the chain cfg
// configures; the connection closes when the test ends.
func dialRoundRobin(t *testing.T, cfg Config, addrs ...string) *grpc.ClientConn {
	t.Helper()
	r := manual.NewBuilderWithScheme("clientchaintest")
	var state resolver.State
	for _, a := range addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(state)
	unary, stream := Chain(cfg)
	cc, err := grpc.NewClient(r.Scheme()+":///svc",
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithUnaryInterceptor(unary),
		grpc.WithStreamInterceptor(stream),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func TestEndToEndRetryAroundDownInstance(t *testing.T) {
	good := startHealthServer(t, false)
	bad := startHealthServer(t, true)

	cfg := DefaultConfig()
	cfg.Registerer = prometheus.NewRegistry()
	cfg.Retry.MaxAttempts = 4
	cfg.Retry.NoBudget = true // round robin sends every other attempt to the bad one
	cfg.NoBreaker = true      // the breaker sees only successes, but keep the test about retry
	// The down instance answers Unavailable itself, so the call reached it:
	// only an idempotent method may be sent again.
	cfg.Retry.Idempotent = []string{"/grpc.health.v1.Health/Check"}
	cfg.Timeout = 5 * time.Second
	cc := dialRoundRobin(t, cfg, good, bad)

	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const calls = 20
	for i := range calls {
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	got := gathered(t, cfg.Registerer.(prometheus.Gatherer), "zrpc_client_requests_total")
	if got["code=OK,method=/grpc.health.v1.Health/Check"] != calls {
		t.Errorf("metrics = %v, want %d OK calls", got, calls)
	}
}

func BenchmarkChainUnary(b *testing.B) {
	noop := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error { return nil }
	run := func(b *testing.B, cfg Config) {
		unary, _ := Chain(cfg)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if err := unary(ctx, "/s/M", nil, nil, nil, noop); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("default+metrics", func(b *testing.B) {
		cfg := DefaultConfig()
		cfg.Registerer = prometheus.NewRegistry()
		run(b, cfg)
	})
	b.Run("default+metrics/caller-deadline", func(b *testing.B) {
		// The caller's deadline is sooner than 2 s: Timeout adds nothing.
		cfg := DefaultConfig()
		cfg.Registerer = prometheus.NewRegistry()
		unary, _ := Chain(cfg)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		b.ReportAllocs()
		for b.Loop() {
			if err := unary(ctx, "/s/M", nil, nil, nil, noop); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("no-timeout", func(b *testing.B) {
		cfg := DefaultConfig()
		cfg.Registerer = prometheus.NewRegistry()
		cfg.Timeout = 0
		run(b, cfg)
	})
}
