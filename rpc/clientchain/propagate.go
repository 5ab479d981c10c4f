package clientchain

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// PropagatedPrefix marks metadata keys that zrpc carries across hops, in
// addition to the W3C trace context keys traceparent, tracestate and baggage.
const PropagatedPrefix = "x-zrpc-"

// Propagate returns an interceptor that copies traceparent, tracestate,
// baggage and every x-zrpc-* key but the caller's token (x-zrpc-token)
// from the incoming metadata of ctx (present
// when the call is made from inside a server handler) to the outgoing
// metadata. Keys the caller already set on the outgoing context are left as
// they are. A context without incoming metadata costs one context lookup.
func Propagate() grpc.UnaryClientInterceptor {
	return interceptor(&propagateStage{next: invokerStage{}})
}

// PropagateStream is [Propagate] for streams.
func PropagateStream() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(propagateMetadata(ctx), desc, cc, method, opts...)
	}
}

type propagateStage struct{ next unaryStage }

func (s *propagateStage) invoke(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts []grpc.CallOption) error {
	return s.next.invoke(propagateMetadata(ctx), method, req, reply, cc, inv, opts)
}

// tokenHeader is the key a caller's ACL token comes in
// (serverchain.TokenHeader): a credential of the caller, for the service
// it called, never carried on. Handed to the next service it would act
// there as the original caller (a confused deputy), a secret leaked to
// every service downstream.
const tokenHeader = "x-zrpc-token"

// propagates reports whether an incoming metadata key is carried to the next
// hop. Keys in metadata.MD are lower case.
func propagates(key string) bool {
	switch key {
	case "traceparent", "tracestate", "baggage":
		return true
	case tokenHeader:
		return false
	}
	return strings.HasPrefix(key, PropagatedPrefix)
}

func propagateMetadata(ctx context.Context) context.Context {
	in, ok := metadata.FromIncomingContext(ctx)
	if !ok || len(in) == 0 {
		return ctx
	}
	var kv []string
	for k, vs := range in {
		if !propagates(k) || len(metadata.ValueFromOutgoingContext(ctx, k)) > 0 {
			continue
		}
		for _, v := range vs {
			kv = append(kv, k, v)
		}
	}
	if len(kv) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}
