package grpctest

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// EchoMethod is the full name of the echo service's one method.
const EchoMethod = "/test.Echo/Call"

// EchoHandler answers one call of EchoMethod.
type EchoHandler func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)

// RegisterEcho registers test.Echo on s, a hand-written service with one
// unary method, Call (EchoMethod), so tests need no generated code. Call
// decodes a wrapperspb.BytesValue (an emptypb.Empty decodes as an empty
// one, and an empty answer decodes as an emptypb.Empty) and answers with
// what handle returns, run behind s's interceptors as generated code runs
// its handlers. A nil handle echoes the request.
func RegisterEcho(s grpc.ServiceRegistrar, handle EchoHandler) {
	if handle == nil {
		handle = func(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) { return in, nil }
	}
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "test.Echo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Call",
			Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.BytesValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				h := func(ctx context.Context, req any) (any, error) {
					return handle(ctx, req.(*wrapperspb.BytesValue))
				}
				if ic == nil {
					return h(ctx, in)
				}
				return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: EchoMethod}, h)
			},
		}},
	}, struct{}{})
}
