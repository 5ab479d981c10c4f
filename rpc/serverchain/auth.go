package serverchain

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TokenHeader is the metadata key Auth reads when there is no
// "authorization: Bearer <token>".
const TokenHeader = "x-zrpc-token"

var (
	errMissingToken = status.Error(codes.Unauthenticated, "missing token")
	errInvalidToken = status.Error(codes.Unauthenticated, "invalid token")
)

// authSkipPrefixes are services callable without a token: health checks and
// reflection, which load balancers and tooling call unauthenticated.
var authSkipPrefixes = []string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

// Auth rejects calls without a token that verify accepts with
// codes.Unauthenticated. The token is read from "authorization: Bearer <t>"
// or, failing that, "x-zrpc-token". The verifier's error text is not sent to
// the client. Health and reflection methods skip auth.
func Auth(verify func(ctx context.Context, token string) error) Interceptor {
	return Interceptor{
		Unary: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := authorize(ctx, info.FullMethod, verify); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		},
		Stream: func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := authorize(ss.Context(), info.FullMethod, verify); err != nil {
				return err
			}
			return handler(srv, ss)
		},
	}
}

func authorize(ctx context.Context, method string, verify func(context.Context, string) error) error {
	for _, p := range authSkipPrefixes {
		if strings.HasPrefix(method, p) {
			return nil
		}
	}
	token := tokenFrom(ctx)
	if token == "" {
		return errMissingToken
	}
	if verify(ctx, token) != nil {
		return errInvalidToken
	}
	return nil
}

func tokenFrom(ctx context.Context) string {
	for _, v := range metadata.ValueFromIncomingContext(ctx, "authorization") {
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			return strings.TrimSpace(v[7:])
		}
	}
	if vs := metadata.ValueFromIncomingContext(ctx, TokenHeader); len(vs) > 0 {
		return strings.TrimSpace(vs[0])
	}
	return ""
}

// StaticTokens returns a verifier accepting exactly the given tokens. Tokens
// are compared as SHA-256 digests in constant time, and every token is
// compared, so timing reveals neither a token's content nor its length.
// Empty tokens are ignored.
func StaticTokens(tokens ...string) func(ctx context.Context, token string) error {
	var sums [][sha256.Size]byte
	for _, t := range tokens {
		if t != "" {
			sums = append(sums, sha256.Sum256([]byte(t)))
		}
	}
	return func(_ context.Context, token string) error {
		got := sha256.Sum256([]byte(token))
		match := 0
		for i := range sums {
			match |= subtle.ConstantTimeCompare(got[:], sums[i][:])
		}
		if match != 1 {
			return errInvalidToken
		}
		return nil
	}
}
