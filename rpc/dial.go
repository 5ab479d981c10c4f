package rpc

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/keepalive"

	"github.com/zrpcio/zrpc/rpc/balancer"
	"github.com/zrpcio/zrpc/rpc/clientchain"
	"github.com/zrpcio/zrpc/rpc/resolver"
)

// DialOption changes how Dial builds a connection.
type DialOption func(*dialOptions)

type dialOptions struct {
	chain     clientchain.Config
	noChain   bool
	balancer  string
	resolver  []resolver.Option
	grpcOpts  []grpc.DialOption
	waitReady bool
	tls       *TLSConfig
	telemetry *TelemetryConfig // nil: no telemetry from configuration
	logger    *slog.Logger
}

// WithBalancer picks the load balancer by name (balancer.RoundRobin, ...);
// the default is balancer.P2CEWMA.
func WithBalancer(name string) DialOption { return func(o *dialOptions) { o.balancer = name } }

// WithChain replaces the default client chain's configuration (see
// clientchain.DefaultConfig: propagation, metrics, breaker, retry, 2 s
// timeout).
func WithChain(cfg clientchain.Config) DialOption { return func(o *dialOptions) { o.chain = cfg } }

// WithIdempotent adds full method names ("/pkg.Service/Method") that are
// safe to run twice to the retry stage's (clientchain.RetryConfig
// Idempotent): they are also resent after failing on an instance that may
// have run them. A later WithChain replaces them.
func WithIdempotent(methods ...string) DialOption {
	return func(o *dialOptions) {
		o.chain.Retry.Idempotent = append(slices.Clip(o.chain.Retry.Idempotent), methods...)
	}
}

// WithHedging turns on hedged requests (clientchain.HedgeConfig): a call of
// a hedged method still unanswered after the method's recent 95th-percentile
// latency is sent to another instance as well, and the first answer wins.
// Hedged methods must be idempotent (WithIdempotent, or the .proto's
// idempotency_level); Dial refuses others. A later WithChain replaces it.
func WithHedging(cfg clientchain.HedgeConfig) DialOption {
	return func(o *dialOptions) { o.chain.Hedge = cfg }
}

// WithoutChain dials without the default client interceptor chain.
func WithoutChain() DialOption { return func(o *dialOptions) { o.noChain = true } }

// WithTimeout sets the default per-call timeout (0 turns it off); it never
// extends a deadline the caller set. It ends a call without being sent to
// the server as grpc-timeout (see clientchain.Timeout); a caller's own
// deadline is sent.
func WithTimeout(d time.Duration) DialOption { return func(o *dialOptions) { o.chain.Timeout = d } }

// WithAgents sets the agents a zrpc:/// target is resolved through
// (default: $ZRPC_ADDR or 127.0.0.1:8400).
func WithAgents(agents ...string) DialOption {
	return func(o *dialOptions) { o.resolver = append(o.resolver, resolver.WithAgents(agents)) }
}

// WithResolverOptions passes options to the zrpc resolver: filters, zone
// preference, a shared agent client.
func WithResolverOptions(opts ...resolver.Option) DialOption {
	return func(o *dialOptions) { o.resolver = append(o.resolver, opts...) }
}

// WithDialOptions passes options to grpc.NewClient (interceptors,
// credentials, message limits).
func WithDialOptions(opts ...grpc.DialOption) DialOption {
	return func(o *dialOptions) { o.grpcOpts = append(o.grpcOpts, opts...) }
}

// WithDialLogger sets the logger of the connection's own work, such as
// its telemetry's export errors (default: discard).
func WithDialLogger(l *slog.Logger) DialOption { return func(o *dialOptions) { o.logger = l } }

// WithMetrics counts the connection's calls, retries and breaker
// rejections in the zrpc_client_* metrics, registered with reg (shared
// with other connections on reg). A later WithChain replaces it.
func WithMetrics(reg prometheus.Registerer) DialOption {
	return func(o *dialOptions) { o.chain.Registerer = reg }
}

// WithWaitReady makes Dial wait, within its context, until the connection
// has a ready instance. If none is ready when the context ends, Dial's
// error says why, as the resolver last knew it: the registry has no
// instance of the service, its instances' health, or why the registry
// could not be watched (no agent answers).
func WithWaitReady() DialOption { return func(o *dialOptions) { o.waitReady = true } }

// clientKeepalive is how a connection made by Dial finds a silent
// instance: no pings while it has no calls in flight.
var clientKeepalive = keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}

// Dial returns a client connection to target: "zrpc:///<service>"
// (discovered through the registry and balanced over its passing
// instances) or "direct:///host:port,host:port". Calls go through the
// default client chain: metadata propagation → metrics → breaker → retry
// (Unavailable, with backoff, a budget, never the same instance twice) →
// timeout (2 s). Calls fail with Unavailable while the service has no
// passing instance. Connections ping an instance that has said nothing
// for 10 s while calls wait on it, and close after 5 s without an answer
// (clientKeepalive).
func Dial(ctx context.Context, target string, opts ...DialOption) (*grpc.ClientConn, error) {
	o := dialOptions{balancer: balancer.P2CEWMA, chain: clientchain.DefaultConfig(), logger: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	scheme, _, ok := strings.Cut(target, "://")
	if !ok || (scheme != resolver.Scheme && scheme != resolver.DirectScheme) {
		return nil, fmt.Errorf("dial %q: target must be zrpc:///<service> or direct:///host:port[,host:port]", target)
	}
	creds, err := o.dialTLS(target)
	if err != nil {
		return nil, fmt.Errorf("dial %q: %w", target, err)
	}
	// unroutable is why the service had no routable instance at the
	// registry's last change ("" when it had some), for WithWaitReady's
	// error.
	var unroutable atomic.Pointer[string]
	ropts := append(slices.Clip(o.resolver), resolver.OnRoutable(func(_ int, why string) { unroutable.Store(&why) }))
	dopts := []grpc.DialOption{
		creds,
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, o.balancer)),
		grpc.WithResolvers(resolver.NewBuilder(ropts...), resolver.NewDirectBuilder()),
		// An instance's host gone silent (cut off by a network that
		// drops packets, its VM paused) leaves its connection open and
		// "ready": without pings each call to it waits out its timeout,
		// until the kernel gives up on the connection many minutes on.
		// With calls in flight and nothing heard for 10 s, a ping; no
		// answer in 5 s closes the connection, and the balancer leaves
		// the instance out while it reconnects. rpc.Server allows it
		// (serverKeepalive); WithDialOptions can replace it.
		grpc.WithKeepaliveParams(clientKeepalive),
	}
	if !o.noChain {
		unary, stream, err := clientchain.NewChain(o.chain)
		if err != nil {
			return nil, fmt.Errorf("dial %q: %w", target, err)
		}
		dopts = append(dopts, grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream))
	}
	var tel *telemetry
	if o.telemetry != nil {
		var traced grpc.DialOption
		if tel, traced, err = o.dialTelemetry(ctx, o.logger); err != nil {
			return nil, fmt.Errorf("dial %q: %w", target, err)
		}
		dopts = append(dopts, traced)
	}
	dopts = append(dopts, o.grpcOpts...)
	conn, err := grpc.NewClient(target, dopts...)
	if err != nil {
		if tel != nil {
			tel.shutdown(ctx)
		}
		return nil, fmt.Errorf("dial %q: %w", target, err)
	}
	if tel != nil {
		tel.flushOnClose(conn, o.logger)
	}
	if o.waitReady {
		conn.Connect()
		for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
			if !conn.WaitForStateChange(ctx, s) {
				conn.Close()
				if why := unroutable.Load(); why != nil && *why != "" {
					return nil, fmt.Errorf("dial %q: no ready instance: %s: %w", target, *why, ctx.Err())
				}
				return nil, fmt.Errorf("dial %q: no ready instance: %w", target, ctx.Err())
			}
		}
	}
	return conn, nil
}
