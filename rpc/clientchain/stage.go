package clientchain

import (
	"context"

	"google.golang.org/grpc"
)

// unaryStage is one link of the unary chain. Stages are linked through their
// next field when the chain is built, and the real invoker is passed down as
// an argument, so a call through the whole chain creates no closures.
type unaryStage interface {
	invoke(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts []grpc.CallOption) error
}

// notingStage is a stage that hands a [PickNote] to the picker of its
// attempts itself, at less cost than a context value of the caller's
// (the timeout stage puts it in the context it makes anyway).
type notingStage interface {
	invokeNoted(ctx context.Context, note *PickNote, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts []grpc.CallOption) error
}

// invokerStage ends every chain: it calls grpc's invoker.
type invokerStage struct{}

func (invokerStage) invoke(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts []grpc.CallOption) error {
	return inv(ctx, method, req, reply, cc, opts...)
}

func (invokerStage) invokeNoted(ctx context.Context, note *PickNote, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts []grpc.CallOption) error {
	return inv(withNote(ctx, note), method, req, reply, cc, opts...)
}

// withNote returns ctx carrying note, or ctx itself when note is nil.
func withNote(ctx context.Context, note *PickNote) context.Context {
	if note == nil {
		return ctx
	}
	return WithPickNote(ctx, note)
}

// interceptor turns the head of a chain of stages into a grpc interceptor.
func interceptor(head unaryStage) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return head.invoke(ctx, method, req, reply, cc, inv, opts)
	}
}

// chainStream composes stream interceptors, first outermost.
func chainStream(ints []grpc.StreamClientInterceptor) grpc.StreamClientInterceptor {
	switch len(ints) {
	case 0:
		return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(ctx, desc, cc, method, opts...)
		}
	case 1:
		return ints[0]
	}
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return ints[0](ctx, desc, cc, method, nextStreamer(ints[1:], streamer), opts...)
	}
}

func nextStreamer(ints []grpc.StreamClientInterceptor, final grpc.Streamer) grpc.Streamer {
	if len(ints) == 0 {
		return final
	}
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return ints[0](ctx, desc, cc, method, nextStreamer(ints[1:], final), opts...)
	}
}
