// Package resolver provides the grpc-go name resolvers of zrpc clients.
//
// Scheme "zrpc" ([Scheme]) resolves a service through the registry kept by
// the zrpc agents: "zrpc:///user.rpc" watches service user.rpc through the
// default agents, "zrpc://10.0.0.1:8400,10.0.0.2:8400/user.rpc" through the
// agents named in the target. The resolver keeps the instances that are
// PASSING (and pass the Builder's filters) as the ClientConn's addresses,
// each carrying its weight, zone, version, tags and metadata as
// [balancer.Attributes]. It is watch-driven: every registry change reaches
// the ClientConn at once. When every agent is unreachable it keeps the last
// list it had, so calls go on to the cached instances, and it resyncs when an
// agent answers again.
//
// Scheme "direct" ([DirectScheme]) is a fixed list:
// "direct:///127.0.0.1:9001,127.0.0.1:9002".
//
// Call [Register] once (it is idempotent) to make both schemes known to
// grpc, or pass a Builder to grpc.WithResolvers. This package talks to the
// agents through package client only; it never links the agent itself.
//
// [balancer.Attributes]: https://pkg.go.dev/github.com/zrpcio/zrpc/rpc/balancer#Attributes
package resolver
