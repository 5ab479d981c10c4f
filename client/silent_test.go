package client

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
)

// registeringAgent is a fake agent that answers Register, and counts the
// registrations it answered.
func registeringAgent(t *testing.T, delay time.Duration, answered *atomic.Int32) *clienttest.Agent {
	return (&clienttest.Agent{OnRegister: func(ctx context.Context, req *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error) {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		answered.Add(1)
		return &zrpcpb.RegisterResponse{Header: &zrpcpb.ResponseHeader{Revision: 7}, Instance: req.Instance}, nil
	}}).Start(t)
}

// TestCallMovesOnFromAnAgentThatStopsAnswering: the agent a client talks
// to stops answering (stopped, or cut off by a network that drops its
// packets) while its connection stays open and answers pings, so neither
// the call nor gRPC's keepalive fails: the client's health check of it
// goes unanswered, the write moves to the next endpoint and succeeds well
// within its deadline, and the next calls go there first.
func TestCallMovesOnFromAnAgentThatStopsAnswering(t *testing.T) {
	defer func(p, to time.Duration) { endpointProbe, probeTimeout = p, to }(endpointProbe, probeTimeout)
	endpointProbe, probeTimeout = 200*time.Millisecond, 200*time.Millisecond
	var firstAnswered, nextAnswered atomic.Int32
	first := registeringAgent(t, 0, &firstAnswered)
	next := registeringAgent(t, 0, &nextAnswered)
	c := newTestClient(t, first.Addr, next.Addr)
	inst := &zrpcpb.Instance{Service: "user.rpc", Id: "u1", Address: "10.0.0.1:9000"}
	if _, _, err := c.Register(testContext(t), inst); err != nil || firstAnswered.Load() != 1 {
		t.Fatalf("register through the first agent: %v (%d answered)", err, firstAnswered.Load())
	}

	first.Silent.Store(true)
	// Without giving up on the silent agent, this write waits for its
	// whole deadline and fails.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, _, err := c.Register(ctx, inst); err != nil {
		t.Fatalf("register with the first agent silent: %v", err)
	}
	if nextAnswered.Load() != 1 {
		t.Fatalf("the next agent answered %d registrations, want 1", nextAnswered.Load())
	}
	before := first.Calls()
	if _, _, err := c.Register(testContext(t), inst); err != nil {
		t.Fatalf("the write after: %v", err)
	}
	if first.Calls() != before || nextAnswered.Load() != 2 {
		t.Errorf("the write after the move went to the silent agent %d times, the next %d; want 0 and 1",
			first.Calls()-before, nextAnswered.Load()-1)
	}
}

// TestCallWaitsForASlowAgentThatAnswersHealthChecks: an agent that takes
// several probe intervals to answer a call (a write waiting for an
// election) but answers its health checks is waited for, not left.
func TestCallWaitsForASlowAgentThatAnswersHealthChecks(t *testing.T) {
	defer func(p, to time.Duration) { endpointProbe, probeTimeout = p, to }(endpointProbe, probeTimeout)
	endpointProbe, probeTimeout = 100*time.Millisecond, 100*time.Millisecond
	var slowAnswered, nextAnswered atomic.Int32
	slow := registeringAgent(t, time.Second, &slowAnswered)
	next := registeringAgent(t, 0, &nextAnswered)
	c := newTestClient(t, slow.Addr, next.Addr)
	inst := &zrpcpb.Instance{Service: "user.rpc", Id: "u1", Address: "10.0.0.1:9000"}
	if _, _, err := c.Register(testContext(t), inst); err != nil {
		t.Fatal(err)
	}
	if slowAnswered.Load() != 1 || nextAnswered.Load() != 0 {
		t.Fatalf("the slow agent answered %d, the next %d; want the slow one alone", slowAnswered.Load(), nextAnswered.Load())
	}
}
