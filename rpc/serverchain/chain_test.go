package serverchain

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/zrpcio/zrpc/internal/grpctest"
)

func testConfig(t *testing.T) (Config, *prometheus.Registry, *logBuffer) {
	log, buf := testLogger(t)
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Logger = log
	cfg.Registerer = reg
	return cfg, reg, buf
}

func withToken(tok string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
}

func TestChainUnary(t *testing.T) {
	cfg, reg, buf := testConfig(t)
	cfg.Tokens = []string{"good"}
	cfg.RateLimit, cfg.RateBurst = 1e-6, 2 // two calls per method, ever
	unary, _ := Chain(cfg)

	// A good call: the handler sees the 2s timeout.
	var deadline time.Time
	var hasDeadline bool
	_, err := unary(withToken("good"), nil, unaryInfo("/svc/A"), func(ctx context.Context, _ any) (any, error) {
		deadline, hasDeadline = ctx.Deadline()
		return nil, nil
	})
	wantCode(t, err, codes.OK)
	if !hasDeadline || time.Until(deadline) > 2*time.Second {
		t.Fatalf("handler deadline %v (set %v), want within 2s", deadline, hasDeadline)
	}

	// Auth runs before the rate limiter: bad tokens do not spend tokens.
	for range 3 {
		_, err = unary(withToken("bad"), nil, unaryInfo("/svc/A"), okHandler)
		wantCode(t, err, codes.Unauthenticated)
	}
	// A panic is recovered after auth and counted as Internal.
	_, err = unary(withToken("good"), nil, unaryInfo("/svc/A"), func(context.Context, any) (any, error) { panic("boom") })
	wantCode(t, err, codes.Internal)
	// The burst of two is spent.
	_, err = unary(withToken("good"), nil, unaryInfo("/svc/A"), okHandler)
	wantCode(t, err, codes.ResourceExhausted)

	for code, want := range map[string]float64{"OK": 1, "Unauthenticated": 3, "Internal": 1, "ResourceExhausted": 1} {
		if got := sample(t, reg, "zrpc_server_requests_total", map[string]string{"method": "/svc/A", "code": code}); got != want {
			t.Errorf("requests{%s} = %v, want %v", code, got, want)
		}
	}
	if got := sample(t, reg, "zrpc_server_in_flight", nil); got != 0 {
		t.Errorf("in flight %v, want 0", got)
	}
	var errors int
	for _, l := range buf.Lines() {
		if strings.Contains(l, "level=ERROR") {
			errors++
		}
	}
	if errors != 1 {
		t.Errorf("%d Error lines, want 1 (the panic)", errors)
	}
}

func TestChainStream(t *testing.T) {
	cfg, reg, _ := testConfig(t)
	cfg.Tokens = []string{"good"}
	_, stream := Chain(cfg)
	var hasDeadline bool
	err := stream(nil, &fakeStream{ctx: withToken("good")}, streamInfo("/svc/W"), func(_ any, ss grpc.ServerStream) error {
		_, hasDeadline = ss.Context().Deadline()
		return nil
	})
	wantCode(t, err, codes.OK)
	if hasDeadline {
		t.Error("streams must not get the unary timeout")
	}
	err = stream(nil, &fakeStream{ctx: context.Background()}, streamInfo("/svc/W"), func(any, grpc.ServerStream) error { return nil })
	wantCode(t, err, codes.Unauthenticated)
	err = stream(nil, &fakeStream{ctx: withToken("good")}, streamInfo("/svc/W"), func(any, grpc.ServerStream) error { panic("boom") })
	wantCode(t, err, codes.Internal)
	if got := sample(t, reg, "zrpc_server_requests_total", map[string]string{"method": "/svc/W", "code": "Internal"}); got != 1 {
		t.Errorf("Internal count %v, want 1", got)
	}
}

func TestChainDefaultsOmitAuthAndRate(t *testing.T) {
	cfg, _, _ := testConfig(t)
	unary, _ := Chain(cfg)
	for range 100 {
		_, err := unary(context.Background(), nil, unaryInfo("/svc/M"), okHandler)
		wantCode(t, err, codes.OK)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, mut := range map[string]func(*Config){
		"rate":      func(c *Config) { c.RateLimit = -1 },
		"burst":     func(c *Config) { c.RateBurst = -1 },
		"in flight": func(c *Config) { c.MaxInFlight = -1 },
		"timeout":   func(c *Config) { c.Timeout = -time.Second },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			mut(&cfg)
			if cfg.Validate() == nil {
				t.Fatal("Validate accepted an invalid config")
			}
			defer func() {
				if recover() == nil {
					t.Fatal("Chain accepted an invalid config")
				}
			}()
			Chain(cfg)
		})
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestEndToEnd(t *testing.T) {
	cfg, _, _ := testConfig(t)
	cfg.Tokens = []string{"good"}
	unary, stream := Chain(cfg)
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	grpctest.RegisterEcho(srv, nil) // outside the auth skip list
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := func(tok string) context.Context {
		if tok == "" {
			return ctx
		}
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	tests := []struct {
		name, method, token string
		want                codes.Code
	}{
		{"health without token", "/grpc.health.v1.Health/Check", "", codes.OK},
		{"health with bad token", "/grpc.health.v1.Health/Check", "bad", codes.OK},
		{"echo with bad token", grpctest.EchoMethod, "bad", codes.Unauthenticated},
		{"echo without token", grpctest.EchoMethod, "", codes.Unauthenticated},
		{"echo with good token", grpctest.EchoMethod, "good", codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.method == grpctest.EchoMethod {
				resp := new(wrapperspb.BytesValue)
				err := conn.Invoke(out(tt.token), tt.method, wrapperspb.Bytes([]byte("ping")), resp)
				wantCode(t, err, tt.want)
				if tt.want == codes.OK && string(resp.GetValue()) != "ping" {
					t.Fatalf("echo answered %q", resp.GetValue())
				}
				return
			}
			resp := new(healthpb.HealthCheckResponse)
			err := conn.Invoke(out(tt.token), tt.method, &healthpb.HealthCheckRequest{}, resp)
			wantCode(t, err, tt.want)
			if tt.want == codes.OK && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("status %v", resp.GetStatus())
			}
		})
	}
}

func BenchmarkChainUnary(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Registerer = prometheus.NewRegistry()
	unary, _ := Chain(cfg)
	info := unaryInfo("/bench.Service/Noop")
	ctx := context.Background()
	handler := func(context.Context, any) (any, error) { return nil, nil }
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := unary(ctx, nil, info, handler); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChainUnaryParallel(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Registerer = prometheus.NewRegistry()
	unary, _ := Chain(cfg)
	info := unaryInfo("/bench.Service/Noop")
	handler := func(context.Context, any) (any, error) { return nil, nil }
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := unary(context.Background(), nil, info, handler); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// Health checks are neither rate limited nor shed: with the hard cap held
// by a call and the rate limiter's bucket empty, a load balancer's or the
// agent's checks (and a stranger's) still pass, and the slot of the call
// is given back once it ends.
func TestChainNeverRefusesHealthChecks(t *testing.T) {
	cfg, reg, _ := testConfig(t)
	cfg.RateLimit, cfg.RateBurst = 1e-6, 1 // one call per method, ever
	cfg.MaxInFlight = 1
	unary, stream := Chain(cfg)

	entered, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		_, err := unary(context.Background(), nil, unaryInfo("/svc/Held"), func(context.Context, any) (any, error) {
			close(entered)
			<-release
			return nil, nil
		})
		held <- err
	}()
	<-entered
	_, err := unary(context.Background(), nil, unaryInfo("/svc/Other"), okHandler)
	wantCode(t, err, codes.ResourceExhausted) // the cap of one is held
	for range 3 {
		_, err := unary(context.Background(), nil, unaryInfo("/grpc.health.v1.Health/Check"), okHandler)
		wantCode(t, err, codes.OK)
		err = stream(nil, &fakeStream{ctx: context.Background()}, streamInfo("/grpc.health.v1.Health/Watch"), func(any, grpc.ServerStream) error { return nil })
		wantCode(t, err, codes.OK)
	}
	close(release)
	wantCode(t, <-held, codes.OK)
	_, err = unary(context.Background(), nil, unaryInfo("/svc/After"), okHandler)
	wantCode(t, err, codes.OK) // the slot is free again
	if got := sample(t, reg, "zrpc_server_in_flight", nil); got != 0 {
		t.Errorf("in flight %v, want 0", got)
	}
}

// A stream's lifetime is no latency sample: a watch open for a minute
// that ends does not make the shedder take the process for overloaded and
// shed unary calls that are as fast as ever. Open streams count toward
// the hard cap only.
func TestChainStreamsDoNotInflateShedLatency(t *testing.T) {
	clock := newFakeClock()
	shed := newTestShedder(clock, 0, 4, 2)
	c := &chain{log: orDiscard(nil), met: newMetrics(nil, nil, -1, clock.Now), shed: shed}
	err := c.stream(nil, &fakeStream{ctx: context.Background()}, streamInfo("/svc/Watch"), func(any, grpc.ServerStream) error {
		clock.Advance(time.Minute)
		// 100 calls of 20ms per 100ms bucket: a limit of 20 in flight,
		// which applies only once latency rises above 40ms.
		complete(t, shed, clock, 100, 20*time.Millisecond)
		clock.Advance(testBucket)
		if n := shed.inFlight.Load(); n != 0 {
			t.Errorf("an open stream counts as %d unary calls in flight", n)
		}
		return nil
	})
	wantCode(t, err, codes.OK)
	if got := hold(shed, 500); got != 500 {
		t.Fatalf("admitted %d unary calls after a stream of a minute ended, want 500: its length was taken for latency", got)
	}

	capped := newTestShedder(clock, 2, 4, 2)
	c.shed = capped
	streamErr := make(chan error, 1)
	entered, release := make(chan struct{}), make(chan struct{})
	go func() {
		streamErr <- c.stream(nil, &fakeStream{ctx: context.Background()}, streamInfo("/svc/Watch"), func(any, grpc.ServerStream) error {
			close(entered)
			<-release
			return nil
		})
	}()
	<-entered
	if got := hold(capped, 10); got != 1 {
		t.Fatalf("with a stream open, a cap of 2 admitted %d unary calls, want 1", got)
	}
	close(release)
	wantCode(t, <-streamErr, codes.OK)
	if n := capped.streams.Load(); n != 0 {
		t.Fatalf("%d streams counted after the stream ended", n)
	}
}
