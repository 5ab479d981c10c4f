package client

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// ErrKeyringIncomplete: a keyring call did not succeed on every agent (one
// failed or did not answer in time). The answer returned with it says which.
var ErrKeyringIncomplete = errors.New("keyring call did not succeed on every agent")

// KeyringList returns the gossip keys of every alive agent and, per key,
// how many agents hold it and how many encrypt with it. Keys are base64.
func (c *Client) KeyringList(ctx context.Context) (*zrpcpb.KeyringResponse, error) {
	return c.keyringCall(ctx, "list", func(ctx context.Context, k zrpcpb.KeyringClient) (*zrpcpb.KeyringResponse, error) {
		return k.List(ctx, &zrpcpb.KeyringListRequest{})
	})
}

// KeyringInstall installs key (base64, 16, 24 or 32 bytes) on every alive
// agent: they accept gossip encrypted with it and still encrypt with
// their primary key. The first step of a key rotation.
func (c *Client) KeyringInstall(ctx context.Context, key string) (*zrpcpb.KeyringResponse, error) {
	return c.keyringCall(ctx, "install", func(ctx context.Context, k zrpcpb.KeyringClient) (*zrpcpb.KeyringResponse, error) {
		return k.Install(ctx, &zrpcpb.KeyringKeyRequest{Key: key})
	})
}

// KeyringUse makes key, installed everywhere first, the primary key of
// every alive agent: they encrypt gossip with it.
func (c *Client) KeyringUse(ctx context.Context, key string) (*zrpcpb.KeyringResponse, error) {
	return c.keyringCall(ctx, "use", func(ctx context.Context, k zrpcpb.KeyringClient) (*zrpcpb.KeyringResponse, error) {
		return k.Use(ctx, &zrpcpb.KeyringKeyRequest{Key: key})
	})
}

// KeyringRemove removes key, which must not be the primary, from every
// alive agent: gossip encrypted with it is refused from then on. The last
// step of a key rotation.
func (c *Client) KeyringRemove(ctx context.Context, key string) (*zrpcpb.KeyringResponse, error) {
	return c.keyringCall(ctx, "remove", func(ctx context.Context, k zrpcpb.KeyringClient) (*zrpcpb.KeyringResponse, error) {
		return k.Remove(ctx, &zrpcpb.KeyringKeyRequest{Key: key})
	})
}

// keyringCall runs fn on an agent, which applies it on every alive agent,
// and returns its answer. When an agent failed or did not answer, the
// answer comes with an error wrapping ErrKeyringIncomplete that names them.
func (c *Client) keyringCall(ctx context.Context, op string, fn func(context.Context, zrpcpb.KeyringClient) (*zrpcpb.KeyringResponse, error)) (*zrpcpb.KeyringResponse, error) {
	var resp *zrpcpb.KeyringResponse
	// The agent waits for every other agent (5 s each, in parallel, after
	// asking each for its keys first for use and remove).
	err := c.callSlow(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = fn(ctx, zrpcpb.NewKeyringClient(ep.conn))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", op, err)
	}
	var failed []string
	for _, r := range resp.GetAgents() {
		if !r.GetOk() {
			failed = append(failed, r.GetAgent())
		}
	}
	if len(failed) > 0 {
		return resp, fmt.Errorf("keyring %s failed on %d of %d agents (%s): %w",
			op, len(failed), len(resp.GetAgents()), strings.Join(failed, ", "), ErrKeyringIncomplete)
	}
	return resp, nil
}
