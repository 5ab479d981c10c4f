package balancer

import (
	"context"

	"google.golang.org/grpc/metadata"
)

// HashKeyMetadataKey is the outgoing metadata key [ConsistentHash] reads a
// call's hash key from when the context carries none set by [WithHashKey].
const HashKeyMetadataKey = "x-zrpc-hash-key"

type hashKeyCtxKey struct{}

// WithHashKey returns a context whose calls [ConsistentHash] routes by key:
// calls with the same key go to the same instance while the set of ready
// instances does not change. It takes precedence over [HashKeyMetadataKey].
// The key stays local; it is not sent to the server.
func WithHashKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, hashKeyCtxKey{}, key)
}

// hashKeyFrom returns the call's hash key, and false if it has none.
func hashKeyFrom(ctx context.Context) (string, bool) {
	if ctx == nil {
		return "", false
	}
	if k, ok := ctx.Value(hashKeyCtxKey{}).(string); ok {
		return k, true
	}
	if vs := metadata.ValueFromOutgoingContext(ctx, HashKeyMetadataKey); len(vs) > 0 {
		return vs[0], true
	}
	return "", false
}
