package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// ACLBootstrap creates the cluster's management token and returns it with
// its secret, which no agent can show again. It works once per cluster;
// later calls fail with apierr.ErrFailedPrecondition. The client makes the
// secret and every attempt sends the same one, so an attempt whose answer
// was lost after the agent applied it is answered by the next.
func (c *Client) ACLBootstrap(ctx context.Context) (*zrpcpb.ACLToken, string, error) {
	secret, err := newTokenSecret()
	if err != nil {
		return nil, "", err
	}
	var resp *zrpcpb.ACLBootstrapResponse
	req := &zrpcpb.ACLBootstrapRequest{Secret: secret}
	err = c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = zrpcpb.NewACLClient(ep.conn).Bootstrap(ctx, req)
		return err
	})
	return resp.GetToken(), resp.GetSecret(), err
}

// newTokenSecret returns a new token secret in the form agents check (and
// package acl makes): "zrpc_" and 64 lowercase hex digits, 256 random
// bits.
func newTokenSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate token secret: %w", err)
	}
	return "zrpc_" + hex.EncodeToString(b[:]), nil
}

// ACLPolicyCreate stores a new policy; rules that do not parse fail with
// apierr.ErrInvalidArgument naming their line and column.
//
// A create carries no request id: when an attempt fails after it may have
// been applied (the agent's answer lost) and the next agent says the
// policy exists, the policy is read back, and if it is the one asked for
// the create succeeded.
func (c *Client) ACLPolicyCreate(ctx context.Context, name, description, rules string) (*zrpcpb.ACLPolicy, error) {
	var resp *zrpcpb.ACLPolicyCreateResponse
	req := &zrpcpb.ACLPolicyCreateRequest{Policy: &zrpcpb.ACLPolicy{Name: name, Description: description, Rules: rules}}
	attempts := 0
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		attempts++
		resp, err = zrpcpb.NewACLClient(ep.conn).PolicyCreate(ctx, req)
		return err
	})
	if attempts > 1 && is(err, apierr.ErrAlreadyExists, codes.AlreadyExists) {
		if p, rerr := c.ACLPolicy(ctx, name); rerr == nil && p.GetRules() == rules && p.GetDescription() == description {
			return p, nil
		}
	}
	return resp.GetPolicy(), err
}

// deleteOnce runs an ACL delete, which carries no request id, through
// call: NotFound from an attempt after the first, which may have deleted
// it before its answer was lost, is the delete done.
func (c *Client) deleteOnce(ctx context.Context, del func(context.Context, zrpcpb.ACLClient) error) error {
	attempts := 0
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) error {
		attempts++
		return del(ctx, zrpcpb.NewACLClient(ep.conn))
	})
	if attempts > 1 && is(err, apierr.ErrNotFound, codes.NotFound) {
		return nil
	}
	return err
}

// is reports whether err is sentinel, or carries code without a reason
// (an agent that sends none).
func is(err, sentinel error, code codes.Code) bool {
	return errors.Is(err, sentinel) || status.Code(err) == code
}

// ACLPolicy returns the policy called name.
func (c *Client) ACLPolicy(ctx context.Context, name string) (*zrpcpb.ACLPolicy, error) {
	var resp *zrpcpb.ACLPolicyGetResponse
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = zrpcpb.NewACLClient(ep.conn).PolicyGet(ctx, &zrpcpb.ACLPolicyGetRequest{Name: name})
		return err
	})
	return resp.GetPolicy(), err
}

// ACLPolicies returns every policy sorted by name.
func (c *Client) ACLPolicies(ctx context.Context) ([]*zrpcpb.ACLPolicy, error) {
	var resp *zrpcpb.ACLPolicyListResponse
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = zrpcpb.NewACLClient(ep.conn).PolicyList(ctx, &zrpcpb.ACLPolicyListRequest{})
		return err
	})
	return resp.GetPolicies(), err
}

// ACLPolicyDelete deletes a policy; one a token still names is refused
// with apierr.ErrFailedPrecondition.
func (c *Client) ACLPolicyDelete(ctx context.Context, name string) error {
	return c.deleteOnce(ctx, func(ctx context.Context, acl zrpcpb.ACLClient) error {
		_, err := acl.PolicyDelete(ctx, &zrpcpb.ACLPolicyDeleteRequest{Name: name})
		return err
	})
}

// ACLTokenCreate makes a token carrying policies and returns it with its
// secret, which no agent can show again. As with ACLBootstrap, the client
// makes the secret, so that a retry after a lost answer makes no second
// token.
func (c *Client) ACLTokenCreate(ctx context.Context, description string, policies ...string) (*zrpcpb.ACLToken, string, error) {
	secret, err := newTokenSecret()
	if err != nil {
		return nil, "", err
	}
	var resp *zrpcpb.ACLTokenCreateResponse
	req := &zrpcpb.ACLTokenCreateRequest{Description: description, Policies: policies, Secret: secret}
	err = c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = zrpcpb.NewACLClient(ep.conn).TokenCreate(ctx, req)
		return err
	})
	return resp.GetToken(), resp.GetSecret(), err
}

// ACLToken returns the token with accessor id (never its secret).
func (c *Client) ACLToken(ctx context.Context, accessorID string) (*zrpcpb.ACLToken, error) {
	var resp *zrpcpb.ACLTokenReadResponse
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = zrpcpb.NewACLClient(ep.conn).TokenRead(ctx, &zrpcpb.ACLTokenReadRequest{AccessorId: accessorID})
		return err
	})
	return resp.GetToken(), err
}

// ACLTokens returns every token sorted by accessor id.
func (c *Client) ACLTokens(ctx context.Context) ([]*zrpcpb.ACLToken, error) {
	var resp *zrpcpb.ACLTokenListResponse
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = zrpcpb.NewACLClient(ep.conn).TokenList(ctx, &zrpcpb.ACLTokenListRequest{})
		return err
	})
	return resp.GetTokens(), err
}

// ACLTokenDelete deletes the token with accessor id; its secret stops
// working.
func (c *Client) ACLTokenDelete(ctx context.Context, accessorID string) error {
	return c.deleteOnce(ctx, func(ctx context.Context, acl zrpcpb.ACLClient) error {
		_, err := acl.TokenDelete(ctx, &zrpcpb.ACLTokenDeleteRequest{AccessorId: accessorID})
		return err
	})
}
