package security

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/client"
)

// probeTimeout bounds each call checkEnforced expects to fail.
const probeTimeout = 3 * time.Second

// checkEnforced makes sure the secured agent at addr really refuses what
// it should before it is measured: a plaintext connection, and a TLS
// connection without a token.
func checkEnforced(ctx context.Context, addr string, sec *pki) error {
	plain, err := client.New(client.Config{Endpoints: []string{addr}})
	if err != nil {
		return err
	}
	defer plain.Close()
	if err := probe(ctx, plain); err == nil {
		return errors.New("the TLS agent accepted a plaintext registration")
	}
	tc, err := sec.clientTLS()
	if err != nil {
		return err
	}
	anon, err := client.New(client.Config{Endpoints: []string{addr}, TLS: tc})
	if err != nil {
		return err
	}
	defer anon.Close()
	if err := probe(ctx, anon); !errors.Is(err, apierr.ErrUnauthenticated) {
		return fmt.Errorf("the ACL agent answered a registration without a token with %v, want Unauthenticated", err)
	}
	return nil
}

// probe tries one registration.
func probe(ctx context.Context, c *client.Client) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	_, _, err := c.Register(ctx, instance("probe", 0, 0))
	return err
}
