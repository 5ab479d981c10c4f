package client

import (
	"context"
	"fmt"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// ReadOption tunes a read (Get, List).
type ReadOption func(*readOptions)

type readOptions struct {
	consistency zrpcpb.Consistency
	passingOnly bool
}

// WithConsistency sets the consistency of a read; the default is
// zrpcpb.Consistency_DEFAULT.
func WithConsistency(c zrpcpb.Consistency) ReadOption {
	return func(o *readOptions) { o.consistency = c }
}

// PassingOnly makes Get return only instances whose health is PASSING. List
// ignores it.
func PassingOnly() ReadOption {
	return func(o *readOptions) { o.passingOnly = true }
}

func collectReadOptions(opts []ReadOption) readOptions {
	var o readOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Register creates or replaces (by service and id) an instance and returns it
// as stored, with the registry revision of the write. Every attempt of one
// call carries the same request id, so a retry on another agent after a lost
// answer is applied once and answered like the first attempt.
func (c *Client) Register(ctx context.Context, inst *zrpcpb.Instance) (*zrpcpb.Instance, uint64, error) {
	if inst == nil {
		return nil, 0, fmt.Errorf("register: %w: instance is nil", apierr.ErrInvalidArgument)
	}
	req := &zrpcpb.RegisterRequest{Instance: inst, RequestId: newRequestID()}
	var resp *zrpcpb.RegisterResponse
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = ep.registry.Register(ctx, req)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return resp.GetInstance(), resp.GetHeader().GetRevision(), nil
}

// Deregister removes an instance and returns the revision of the write. It
// fails with apierr.ErrNotFound when the instance does not exist. Every
// attempt of one call carries the same request id, so when an attempt
// removed the instance but its answer was lost, the retry on another agent
// gets the first attempt's answer, not NotFound.
func (c *Client) Deregister(ctx context.Context, service, id string) (uint64, error) {
	req := &zrpcpb.DeregisterRequest{Service: service, Id: id, RequestId: newRequestID()}
	var resp *zrpcpb.DeregisterResponse
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = ep.registry.Deregister(ctx, req)
		return err
	})
	if err != nil {
		return 0, err
	}
	return resp.GetHeader().GetRevision(), nil
}

// RenewTTL marks a TTL-checked instance alive for one more TTL.
func (c *Client) RenewTTL(ctx context.Context, service, id string) error {
	return c.call(ctx, func(ctx context.Context, ep *endpoint) error {
		_, err := ep.registry.RenewTTL(ctx, &zrpcpb.RenewTTLRequest{Service: service, Id: id})
		return err
	})
}

// Get returns the instances of a service and the revision they reflect.
func (c *Client) Get(ctx context.Context, service string, opts ...ReadOption) ([]*zrpcpb.Instance, uint64, error) {
	o := collectReadOptions(opts)
	req := &zrpcpb.GetRequest{Service: service, Consistency: o.consistency, PassingOnly: o.passingOnly}
	var resp *zrpcpb.GetResponse
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = ep.registry.Get(ctx, req)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return resp.GetInstances(), resp.GetHeader().GetRevision(), nil
}

// List returns a summary of every service and the revision it reflects.
func (c *Client) List(ctx context.Context, opts ...ReadOption) ([]*zrpcpb.ServiceSummary, uint64, error) {
	o := collectReadOptions(opts)
	var resp *zrpcpb.ListResponse
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = ep.registry.List(ctx, &zrpcpb.ListRequest{Consistency: o.consistency})
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return resp.GetServices(), resp.GetHeader().GetRevision(), nil
}
