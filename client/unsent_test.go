package client

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/internal/testport"
)

// TestAWriteNoAgentReceivedIsNotApplied: a write whose agent refused the
// connection never left the client, and fails saying it was not applied;
// a read's failure says nothing of writes.
func TestAWriteNoAgentReceivedIsNotApplied(t *testing.T) {
	c := newTestClient(t, testport.Unused(t))
	_, _, err := c.Register(t.Context(), &zrpcpb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9000"})
	if err == nil || !apierr.IsNotApplied(err) {
		t.Errorf("Register through an agent that refused the connection = %v; want an error saying the write was not applied", err)
	}
	_, err = c.Deregister(t.Context(), "user.rpc", "u1")
	if err == nil || !apierr.IsNotApplied(err) {
		t.Errorf("Deregister through an agent that refused the connection = %v; want an error saying the write was not applied", err)
	}
	_, _, err = c.Get(t.Context(), "user.rpc")
	if err == nil || strings.Contains(err.Error(), "not applied") {
		t.Errorf("Get through an agent that refused the connection = %v; want an error that says nothing of writes", err)
	}
}

// TestAWriteOneAgentRefusedAndAnotherDidNotApplyIsNotApplied: over two
// endpoints, a write the first refused the connection for and the second
// did not apply (it says so) was not applied; one the second may have
// applied may have been.
func TestAWriteOneAgentRefusedAndAnotherDidNotApplyIsNotApplied(t *testing.T) {
	notApplied := func(context.Context, *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error) {
		return nil, apierr.ToStatus(apierr.NotApplied(fmt.Errorf("%w: this agent is cut off from the leader", apierr.ErrNoLeader)))
	}
	unknown := func(context.Context, *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error) {
		return nil, apierr.ToStatus(fmt.Errorf("%w: the leader did not answer within leader_wait (5s)", apierr.ErrNoLeader))
	}
	for _, tc := range []struct {
		name       string
		second     func(context.Context, *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error)
		notApplied bool
	}{
		{"the second did not apply it", notApplied, true},
		{"the second may have applied it", unknown, false},
	} {
		a := (&clienttest.Agent{OnRegister: tc.second}).Start(t)
		c := newTestClient(t, testport.Unused(t), a.Addr)
		_, _, err := c.Register(t.Context(), &zrpcpb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9000"})
		if err == nil || a.Calls() != 1 {
			t.Fatalf("%s: Register = %v after %d calls to the agent that listens; want a failure after one", tc.name, err, a.Calls())
		}
		if got := apierr.IsNotApplied(err); got != tc.notApplied {
			t.Errorf("%s: %v: not applied %v, want %v", tc.name, err, got, tc.notApplied)
		}
	}
}

// TestAWriteWhoseAgentDiedWhileApplyingItMayHaveApplied: a write the
// agent received, whose connection then broke before it answered, may
// have been applied: its error must not say that it was not.
func TestAWriteWhoseAgentDiedWhileApplyingItMayHaveApplied(t *testing.T) {
	a := &clienttest.Agent{}
	a.OnRegister = func(ctx context.Context, _ *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error) {
		go a.Server.Stop() // the agent dies with the write in hand
		<-ctx.Done()
		return nil, ctx.Err()
	}
	a.Start(t)
	c := newTestClient(t, a.Addr)
	_, _, err := c.Register(t.Context(), &zrpcpb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9000"})
	if err == nil || a.Calls() != 1 {
		t.Fatalf("Register = %v after %d calls to the agent; want a failure after one", err, a.Calls())
	}
	if apierr.IsNotApplied(err) {
		t.Errorf("Register through an agent that died while it held the write = %v; want an error that does not say the write was not applied", err)
	}
}
