package client

import (
	"context"
	"fmt"

	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// Status describes the answering agent and its view of the Raft cluster.
func (c *Client) Status(ctx context.Context) (*zrpcpb.StatusResponse, error) {
	var resp *zrpcpb.StatusResponse
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = ep.status.Status(ctx, &zrpcpb.StatusRequest{})
		return err
	})
	return resp, err
}

// Members lists the agents of the cluster as the answering agent sees them.
func (c *Client) Members(ctx context.Context) ([]*zrpcpb.Member, error) {
	var resp *zrpcpb.MembersResponse
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = ep.status.Members(ctx, &zrpcpb.MembersRequest{})
		return err
	})
	return resp.GetMembers(), err
}

// Peers lists the Raft voters and non-voters.
func (c *Client) Peers(ctx context.Context) ([]*zrpcpb.Peer, error) {
	var resp *zrpcpb.PeersResponse
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = ep.status.Peers(ctx, &zrpcpb.PeersRequest{})
		return err
	})
	return resp.GetPeers(), err
}

// Version returns the build of the answering agent.
func (c *Client) Version(ctx context.Context) (*zrpcpb.VersionResponse, error) {
	var resp *zrpcpb.VersionResponse
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = ep.status.Version(ctx, &zrpcpb.VersionRequest{})
		return err
	})
	return resp, err
}

// Leave asks the first endpoint's agent (and only that one: it is never
// retried on another agent) to leave the cluster for good. The agent
// first hands its blob shards to the others, for as long as ctx allows
// (keeping a part of it for the rest); the answer says whether the leader
// confirmed the removal before the agent shut down, and what became of
// its shards. req may be nil (a leave refused when some shards have no
// agent to go to: see LeaveRequest.allow_degraded).
func (c *Client) Leave(ctx context.Context, req *zrpcpb.LeaveRequest) (*zrpcpb.LeaveResponse, error) {
	if c.closing.Err() != nil {
		return nil, ErrClosed
	}
	if req == nil {
		req = &zrpcpb.LeaveRequest{}
	}
	resp, err := c.endpoints[0].status.Leave(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("leave via %s: %w", c.endpoints[0].addr, mapErr(err))
	}
	return resp, nil
}

// RemovePeer removes agent name from the cluster for good: from Raft and,
// with its instances and sessions, from the registry. The leader does it
// (any agent forwards the call); it refuses to remove itself or an agent
// that is alive. It returns the registry revision after the removal.
func (c *Client) RemovePeer(ctx context.Context, name string) (uint64, error) {
	var resp *zrpcpb.RemovePeerResponse
	// Raft's configuration change and the registry's cleanup may take
	// the leader longer than an attempt's bound.
	err := c.callSlow(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = ep.status.RemovePeer(ctx, &zrpcpb.RemovePeerRequest{Name: name})
		return err
	})
	return resp.GetHeader().GetRevision(), err
}
