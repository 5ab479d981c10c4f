// Package echo is the unary echo service the benchmarks call: it returns
// its BytesValue input. It is declared by hand (no .proto) so that the
// benchmark module needs no generated code. It is not an example of how
// to write a zrpc service: use `zrpcctl gen rpc` for that.
package echo

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ServiceName is the gRPC service; Method the full name of its one method.
const (
	ServiceName = "zrpc.bench.Echo"
	Method      = "/" + ServiceName + "/Echo"
)

// Register adds the echo service to s.
func Register(s grpc.ServiceRegistrar) {
	s.RegisterService(&serviceDesc, struct{}{})
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Echo", Handler: handle}},
}

// handle answers a call with its input.
func handle(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.BytesValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	echo := func(context.Context, any) (any, error) { return in, nil }
	if interceptor == nil {
		return echo(ctx, in)
	}
	return interceptor(ctx, in, &grpc.UnaryServerInfo{FullMethod: Method}, echo)
}
