package client

import (
	"errors"
	"testing"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// TestACLBootstrapAndTokenCreateRetriedAfterLostAnswer: the first attempt
// of a bootstrap, then of a token create, is applied but its answer lost;
// the client's retry on the other agent sends the same secret and gets the
// first attempt's token, whose secret works: one management token, one
// user token.
func TestACLBootstrapAndTokenCreateRetriedAfterLostAnswer(t *testing.T) {
	cl := testcluster.New(t, 2, testcluster.WithConfig(func(cfg *node.Config) { cfg.ACL = true }))
	ctx := testContext(t)

	anon, loser := lossyClient(t, cl, "/zrpc.v1.ACL/Bootstrap", "")
	mgmt, mgmtSecret, err := anon.ACLBootstrap(ctx)
	if err != nil {
		t.Fatalf("bootstrap after a lost answer: %v (want the first attempt's token)", err)
	}
	lost := loser.lost.(*zrpcpb.ACLBootstrapResponse)
	if !loser.fired || mgmt.GetAccessorId() != lost.GetToken().GetAccessorId() || mgmtSecret != lost.GetSecret() {
		t.Fatalf("retried bootstrap answered %v, the lost answer had %v", mgmt, lost.GetToken())
	}
	if _, _, err := anon.ACLBootstrap(ctx); !errors.Is(err, apierr.ErrFailedPrecondition) {
		t.Fatalf("a second bootstrap: %v, want FailedPrecondition", err)
	}

	admin, loser := lossyClient(t, cl, "/zrpc.v1.ACL/TokenCreate", mgmtSecret)
	if _, err := admin.ACLPolicyCreate(ctx, "svc-user", "", `service "user." { write }`); err != nil {
		t.Fatalf("policy create with the management secret: %v", err)
	}
	tok, userSecret, err := admin.ACLTokenCreate(ctx, "user service", "svc-user")
	if err != nil {
		t.Fatalf("token create after a lost answer: %v", err)
	}
	if lost := loser.lost.(*zrpcpb.ACLTokenCreateResponse); tok.GetAccessorId() != lost.GetToken().GetAccessorId() || userSecret != lost.GetSecret() {
		t.Fatalf("retried token create answered %v, the lost answer had %v", tok, lost.GetToken())
	}
	toks, err := admin.ACLTokens(ctx)
	if err != nil || len(toks) != 2 {
		t.Fatalf("tokens: %v, %v; want the management token and one user token", toks, err)
	}
	user, _ := lossyClient(t, cl, "", userSecret)
	if _, _, err := user.Register(ctx, &zrpcpb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9001"}); err != nil {
		t.Fatalf("the user token registering user.rpc: %v", err)
	}
}
