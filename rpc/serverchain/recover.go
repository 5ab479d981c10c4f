package serverchain

import (
	"context"
	"log/slog"
	"runtime/debug"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errInternal is what a client sees when a handler panics; the panic value
// and stack stay in the server log.
var errInternal = status.Error(codes.Internal, "internal error")

// Recover turns a panic in a handler (or a later stage) into codes.Internal
// "internal error" and logs the panic value and stack once, at Error, with
// the method. A nil log discards.
func Recover(log *slog.Logger) Interceptor {
	log = orDiscard(log)
	return Interceptor{
		Unary: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
			defer func() {
				if r := recover(); r != nil {
					resp, err = nil, panicError(ctx, log, info.FullMethod, r)
				}
			}()
			return handler(ctx, req)
		},
		Stream: func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = panicError(ss.Context(), log, info.FullMethod, r)
				}
			}()
			return handler(srv, ss)
		},
	}
}

// panicError logs a recovered panic and returns the error sent to the client.
func panicError(ctx context.Context, log *slog.Logger, method string, r any) error {
	log.LogAttrs(ctx, slog.LevelError, "panic in rpc handler",
		slog.String("method", method),
		slog.Any("panic", r),
		slog.String("stack", string(debug.Stack())))
	return errInternal
}

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
