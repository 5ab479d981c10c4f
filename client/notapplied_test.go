package client

import (
	"context"
	"fmt"
	"testing"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
)

// TestAWriteIsNotAppliedOnlyIfNoAttemptMayHaveApplied: a write the client
// tried on two agents fails saying it was not applied only when both said
// so (each proposed and forwarded nothing); when either failed without
// saying so, the write may have been applied, and the error says nothing
// of the sort, whichever agent answered last.
func TestAWriteIsNotAppliedOnlyIfNoAttemptMayHaveApplied(t *testing.T) {
	notApplied := func(context.Context, *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error) {
		return nil, apierr.ToStatus(apierr.NotApplied(fmt.Errorf("%w: this agent is cut off from the leader", apierr.ErrNoLeader)))
	}
	unknown := func(context.Context, *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error) {
		return nil, apierr.ToStatus(fmt.Errorf("%w: the leader did not answer within leader_wait (5s)", apierr.ErrNoLeader))
	}
	type hook = func(context.Context, *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error)
	for _, tc := range []struct {
		name          string
		first, second hook
		notApplied    bool
	}{
		{"both not applied", notApplied, notApplied, true},
		{"the first may have applied it", unknown, notApplied, false},
		{"the second may have applied it", notApplied, unknown, false},
	} {
		a1 := (&clienttest.Agent{OnRegister: tc.first}).Start(t)
		a2 := (&clienttest.Agent{OnRegister: tc.second}).Start(t)
		c := newTestClient(t, a1.Addr, a2.Addr)
		_, _, err := c.Register(t.Context(), &zrpcpb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9000"})
		if err == nil || a1.Calls() != 1 || a2.Calls() != 1 {
			t.Fatalf("%s: Register = %v after %d and %d calls; want a failure after one call to each agent", tc.name, err, a1.Calls(), a2.Calls())
		}
		if got := apierr.IsNotApplied(err); got != tc.notApplied {
			t.Errorf("%s: %v: not applied %v, want %v", tc.name, err, got, tc.notApplied)
		}
	}
}
