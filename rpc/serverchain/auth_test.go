package serverchain

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

func TestAuth(t *testing.T) {
	ic := Auth(StaticTokens("s3cret", "other-token", ""))
	tests := []struct {
		name   string
		method string
		md     []string
		want   codes.Code
	}{
		{"missing", "/svc/M", nil, codes.Unauthenticated},
		{"empty bearer", "/svc/M", []string{"authorization", "Bearer "}, codes.Unauthenticated},
		{"bad bearer", "/svc/M", []string{"authorization", "Bearer nope"}, codes.Unauthenticated},
		{"prefix of token", "/svc/M", []string{"authorization", "Bearer s3cre"}, codes.Unauthenticated},
		{"not bearer scheme", "/svc/M", []string{"authorization", "Basic s3cret"}, codes.Unauthenticated},
		{"good bearer", "/svc/M", []string{"authorization", "Bearer s3cret"}, codes.OK},
		{"lower-case scheme", "/svc/M", []string{"authorization", "bearer other-token"}, codes.OK},
		{"good x-zrpc-token", "/svc/M", []string{"x-zrpc-token", "s3cret"}, codes.OK},
		{"bad x-zrpc-token", "/svc/M", []string{"x-zrpc-token", "bad"}, codes.Unauthenticated},
		{"health skips auth", "/grpc.health.v1.Health/Check", nil, codes.OK},
		{"health watch skips auth", "/grpc.health.v1.Health/Watch", nil, codes.OK},
		{"reflection skips auth", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", nil, codes.OK},
		{"look-alike does not skip", "/grpc.health.v1.HealthX/Check", nil, codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.md != nil {
				ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(tt.md...))
			}
			u, s := callBoth(ctx, ic, tt.method, nil)
			wantCode(t, u, tt.want)
			wantCode(t, s, tt.want)
		})
	}
}

func TestStaticTokensNone(t *testing.T) {
	if err := StaticTokens()(context.Background(), ""); err == nil {
		t.Fatal("empty verifier accepted the empty token")
	}
}
