package client

import (
	"context"
	"fmt"
	"unicode"

	"google.golang.org/grpc"
)

// maxTokenLen bounds an ACL token's secret.
const maxTokenLen = 512

// validateToken checks the shape of Config.Token: printable, no spaces
// (a token file's trailing newline is the caller's to trim).
func validateToken(token string) error {
	if len(token) > maxTokenLen {
		return fmt.Errorf("token is %d bytes, the limit is %d", len(token), maxTokenLen)
	}
	for i, r := range token {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("token has a space or unprintable character at byte %d", i)
		}
	}
	return nil
}

// tokenDialOptions sends token, when set, with every call as
// "authorization: Bearer <token>".
func tokenDialOptions(token string) []grpc.DialOption {
	if token == "" {
		return nil
	}
	return []grpc.DialOption{grpc.WithPerRPCCredentials(bearerToken(token))}
}

// bearerToken is per-RPC credentials carrying an ACL token.
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity is false: ACLs may be on without TLS (the
// token then crosses the network in the clear, as the agents' other
// traffic does).
func (bearerToken) RequireTransportSecurity() bool { return false }
