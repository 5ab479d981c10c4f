package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// ReadOption tunes a read (Get, List, StatBlob, ListBlobs).
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

// getAttempts bounds how often Get starts over because the service changed
// between its pages; getPageSize is the instances Get asks for per page (an
// agent also bounds a page to about 4 MiB).
const (
	getAttempts = 5
	getPageSize = 1000
)

// Get returns the instances of a service and the revision they reflect. A
// service too large for one answer comes in pages, which Get follows; when
// the service changes between two pages, Get starts over, so the instances
// returned are always one state of the service.
func (c *Client) Get(ctx context.Context, service string, opts ...ReadOption) ([]*zrpcpb.Instance, uint64, error) {
	o := collectReadOptions(opts)
	var err error
	for range getAttempts {
		var insts []*zrpcpb.Instance
		var rev uint64
		insts, rev, err = c.getPages(ctx, &zrpcpb.GetRequest{
			Service: service, Consistency: o.consistency, PassingOnly: o.passingOnly, PageSize: getPageSize,
		})
		if !errors.Is(err, apierr.ErrPageExpired) {
			return insts, rev, err
		}
		c.log.Debug("service changed while reading its pages, starting over", "service", service, "err", err)
	}
	return nil, 0, fmt.Errorf("get %s: changed during each of %d attempts: %w", service, getAttempts, err)
}

// getPages reads every page of a Get.
func (c *Client) getPages(ctx context.Context, req *zrpcpb.GetRequest) ([]*zrpcpb.Instance, uint64, error) {
	var insts []*zrpcpb.Instance
	var rev uint64
	for {
		var resp *zrpcpb.GetResponse
		err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
			resp, err = ep.registry.Get(ctx, req)
			return err
		})
		if err != nil {
			return nil, 0, err
		}
		if insts == nil {
			insts, rev = resp.GetInstances(), resp.GetHeader().GetRevision()
		} else {
			insts = append(insts, resp.GetInstances()...)
		}
		if resp.GetNextPageToken() == "" {
			return insts, rev, nil
		}
		req.PageToken = resp.GetNextPageToken()
	}
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
