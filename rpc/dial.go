package rpc

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/zrpcio/zrpc/rpc/balancer"
	"github.com/zrpcio/zrpc/rpc/resolver"
)

// DialOption changes how Dial builds a connection.
type DialOption func(*dialOptions)

type dialOptions struct {
	balancer  string
	resolver  []resolver.Option
	grpcOpts  []grpc.DialOption
	waitReady bool
}

// WithBalancer picks the load balancer by name (balancer.RoundRobin, ...);
// the default is balancer.P2CEWMA.
func WithBalancer(name string) DialOption { return func(o *dialOptions) { o.balancer = name } }

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

// WithWaitReady makes Dial wait, within its context, until the connection
// has a ready instance.
func WithWaitReady() DialOption { return func(o *dialOptions) { o.waitReady = true } }

// Dial returns a client connection to target: "zrpc:///<service>"
// (discovered through the registry and balanced over its passing
// instances) or "direct:///host:port,host:port". Calls fail with
// Unavailable while the service has no passing instance.
func Dial(ctx context.Context, target string, opts ...DialOption) (*grpc.ClientConn, error) {
	o := dialOptions{balancer: balancer.P2CEWMA}
	for _, opt := range opts {
		opt(&o)
	}
	scheme, _, ok := strings.Cut(target, "://")
	if !ok || (scheme != resolver.Scheme && scheme != resolver.DirectScheme) {
		return nil, fmt.Errorf("dial %q: target must be zrpc:///<service> or direct:///host:port,...", target)
	}
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, o.balancer)),
		grpc.WithResolvers(resolver.NewBuilder(o.resolver...), resolver.NewDirectBuilder()),
	}
	dopts = append(dopts, o.grpcOpts...)
	conn, err := grpc.NewClient(target, dopts...)
	if err != nil {
		return nil, fmt.Errorf("dial %q: %w", target, err)
	}
	if o.waitReady {
		conn.Connect()
		for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
			if !conn.WaitForStateChange(ctx, s) {
				conn.Close()
				return nil, fmt.Errorf("dial %q: no ready instance: %w", target, ctx.Err())
			}
		}
	}
	return conn, nil
}
