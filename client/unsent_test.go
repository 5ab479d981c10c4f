package client

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
)

// refusingAddr returns a loopback address nothing listens on: a
// connection to it is refused.
func refusingAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestAWriteNoAgentReceivedIsNotApplied: a write whose agent refused the
// connection never left the client, and fails saying it was not applied;
// a read's failure says nothing of writes.
func TestAWriteNoAgentReceivedIsNotApplied(t *testing.T) {
	c := newTestClient(t, refusingAddr(t))
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
		c := newTestClient(t, refusingAddr(t), a.Addr)
		_, _, err := c.Register(t.Context(), &zrpcpb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9000"})
		if err == nil || a.Calls() != 1 {
			t.Fatalf("%s: Register = %v after %d calls to the agent that listens; want a failure after one", tc.name, err, a.Calls())
		}
		if got := apierr.IsNotApplied(err); got != tc.notApplied {
			t.Errorf("%s: %v: not applied %v, want %v", tc.name, err, got, tc.notApplied)
		}
	}
}
