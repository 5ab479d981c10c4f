package grpcapi_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/acl"
	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/internal/acltest"
	"github.com/zrpcio/zrpc/node/grpcapi"
	"github.com/zrpcio/zrpc/raftstore"
)

func newACLClient(t *testing.T, addr, token string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Endpoints: []string{addr}, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func register(ctx context.Context, c *client.Client, service string) error {
	_, _, err := c.Register(ctx, &pb.Instance{Service: service, Id: "i1", Address: "127.0.0.1:1"})
	return err
}

// The ACL walk-through: bootstrap once, a management token creates a
// policy and a token, the token may register user.* but not order.rpc,
// and a deleted token stops working.
func TestACLServiceBootstrapPoliciesAndTokens(t *testing.T) {
	ctx := context.Background()
	fsm := raftstore.NewFSM(16)
	addr := acltest.Start(t, fsm)
	anon := newACLClient(t, addr, "")

	if err := register(ctx, anon, "user.rpc"); !errors.Is(err, apierr.ErrUnauthenticated) {
		t.Fatalf("register without a token: %v, want Unauthenticated", err)
	}
	mgmt, secret, err := anon.ACLBootstrap(ctx)
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	if secret == "" || len(mgmt.SecretHash) != 0 || mgmt.Policies[0] != acl.ManagementPolicyName || mgmt.CreateRevision == 0 {
		t.Fatalf("bootstrap answered token %v, secret %d chars", mgmt, len(secret))
	}
	if _, _, err := anon.ACLBootstrap(ctx); !errors.Is(err, apierr.ErrFailedPrecondition) || !strings.Contains(err.Error(), "ACLs already bootstrapped") {
		t.Fatalf("second bootstrap: %v, want FailedPrecondition", err)
	}

	admin := newACLClient(t, addr, secret)
	_, err = admin.ACLPolicyCreate(ctx, "bad", "", `service "user." { wirte }`)
	if !errors.Is(err, apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), "policy.rules: rules:1:19: expected an access") {
		t.Fatalf("policy with bad rules: %v, want InvalidArgument naming policy.rules at 1:19", err)
	}
	if _, err := admin.ACLPolicyCreate(ctx, acl.ManagementPolicyName, "", ""); !errors.Is(err, apierr.ErrInvalidArgument) {
		t.Fatalf("policy named management: %v, want InvalidArgument", err)
	}
	p, err := admin.ACLPolicyCreate(ctx, "svc-user", "the user service", `service "user." { write }`)
	if err != nil || p.CreateRevision == 0 {
		t.Fatalf("policy create: %v, %v", p, err)
	}
	if _, _, err := admin.ACLTokenCreate(ctx, "", "missing"); !errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("token naming a missing policy: %v, want NotFound", err)
	}
	tok, userSecret, err := admin.ACLTokenCreate(ctx, "user service", "svc-user")
	if err != nil {
		t.Fatalf("token create: %v", err)
	}

	user := newACLClient(t, addr, userSecret)
	if err := register(ctx, user, "user.rpc"); err != nil {
		t.Fatalf("user token registering user.rpc: %v", err)
	}
	err = register(ctx, user, "order.rpc")
	if !errors.Is(err, apierr.ErrPermissionDenied) || !strings.Contains(err.Error(), `token lacks service:write on "order.rpc"`) {
		t.Fatalf("user token registering order.rpc: %v, want PermissionDenied naming service:write", err)
	}
	if _, err := user.ACLPolicies(ctx); !errors.Is(err, apierr.ErrPermissionDenied) {
		t.Fatalf("user token listing policies: %v, want PermissionDenied", err)
	}

	if got, err := admin.ACLToken(ctx, tok.AccessorId); err != nil || got.Description != "user service" || len(got.SecretHash) != 0 {
		t.Fatalf("token read: %v, %v (want no secret hash)", got, err)
	}
	toks, err := admin.ACLTokens(ctx)
	if err != nil || len(toks) != 2 {
		t.Fatalf("token list: %d tokens, %v; want 2", len(toks), err)
	}
	for _, tk := range toks {
		if len(tk.SecretHash) != 0 {
			t.Fatal("token list serves a secret hash")
		}
	}
	if err := admin.ACLPolicyDelete(ctx, "svc-user"); !errors.Is(err, apierr.ErrFailedPrecondition) {
		t.Fatalf("deleting a policy a token names: %v, want FailedPrecondition", err)
	}
	if err := admin.ACLTokenDelete(ctx, tok.AccessorId); err != nil {
		t.Fatal(err)
	}
	if err := register(ctx, user, "user.rpc"); !errors.Is(err, apierr.ErrUnauthenticated) {
		t.Fatalf("deleted token: %v, want Unauthenticated", err)
	}
	if err := admin.ACLPolicyDelete(ctx, "svc-user"); err != nil {
		t.Fatalf("deleting a policy no token names: %v", err)
	}
	if ps, err := admin.ACLPolicies(ctx); err != nil || len(ps) != 0 {
		t.Fatalf("policies after delete: %v, %v", ps, err)
	}
}

func TestACLServiceValidatesRequests(t *testing.T) {
	fsm := raftstore.NewFSM(16)
	s := grpcapi.NewACL(grpcapi.ACLConfig{Agent: "n1", Replica: fsm, Cluster: &acltest.Cluster{FSM: fsm}})
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		call  func() error
		field string
	}{
		{"policy missing", func() error { _, err := s.PolicyCreate(ctx, &pb.ACLPolicyCreateRequest{}); return err }, "policy"},
		{"policy name", func() error {
			_, err := s.PolicyCreate(ctx, &pb.ACLPolicyCreateRequest{Policy: &pb.ACLPolicy{Name: "a b"}})
			return err
		}, "policy.name"},
		{"token without policies", func() error { _, err := s.TokenCreate(ctx, &pb.ACLTokenCreateRequest{}); return err }, "policies"},
		{"token policy twice", func() error {
			_, err := s.TokenCreate(ctx, &pb.ACLTokenCreateRequest{Policies: []string{"a", "a"}})
			return err
		}, "policies"},
		{"token read id", func() error { _, err := s.TokenRead(ctx, &pb.ACLTokenReadRequest{AccessorId: "x"}); return err }, "accessor_id"},
		{"token delete id", func() error { _, err := s.TokenDelete(ctx, &pb.ACLTokenDeleteRequest{}); return err }, "accessor_id"},
		{"policy get name", func() error { _, err := s.PolicyGet(ctx, &pb.ACLPolicyGetRequest{}); return err }, "name"},
	} {
		err := tc.call()
		if !errors.Is(err, apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: %v, want InvalidArgument naming %s", tc.name, err, tc.field)
		}
	}
	if fsm.Revision() != 0 {
		t.Fatal("a refused request was proposed")
	}
}

// Bootstrap and token create sent again with the same client-made secret
// (their answer was lost) answer the token the first made: one bootstrap,
// one token. Another secret after bootstrap is refused, and a secret not
// of the secret form is InvalidArgument.
func TestACLServiceRepeatedCreatesWithTheSameSecret(t *testing.T) {
	fsm := raftstore.NewFSM(16)
	s := grpcapi.NewACL(grpcapi.ACLConfig{Agent: "n1", Replica: fsm, Cluster: &acltest.Cluster{FSM: fsm}})
	ctx := context.Background()
	secret := func() string {
		sec, err := acl.NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		return sec
	}

	if _, err := s.Bootstrap(ctx, &pb.ACLBootstrapRequest{Secret: "zrpc_short"}); !errors.Is(err, apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), "secret") {
		t.Fatalf("bootstrap with a malformed secret: %v, want InvalidArgument naming secret", err)
	}
	root := secret()
	first, err := s.Bootstrap(ctx, &pb.ACLBootstrapRequest{Secret: root})
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	if first.Secret != root || first.Token.GetAccessorId() == "" {
		t.Fatalf("bootstrap answered %v, want the secret sent", first)
	}
	again, err := s.Bootstrap(ctx, &pb.ACLBootstrapRequest{Secret: root})
	if err != nil {
		t.Fatalf("bootstrap sent again with its secret: %v, want success", err)
	}
	if again.Token.GetAccessorId() != first.Token.GetAccessorId() || again.Secret != root ||
		again.Token.GetCreateRevision() != first.Token.GetCreateRevision() {
		t.Fatalf("repeated bootstrap answered %v, want the first's token %v", again.Token, first.Token)
	}
	if _, err := s.Bootstrap(ctx, &pb.ACLBootstrapRequest{Secret: secret()}); !errors.Is(err, apierr.ErrFailedPrecondition) {
		t.Fatalf("bootstrap with another secret: %v, want FailedPrecondition", err)
	}
	if _, err := s.Bootstrap(ctx, &pb.ACLBootstrapRequest{}); !errors.Is(err, apierr.ErrFailedPrecondition) {
		t.Fatalf("bootstrap without a secret: %v, want FailedPrecondition", err)
	}

	if _, err := s.PolicyCreate(ctx, &pb.ACLPolicyCreateRequest{Policy: &pb.ACLPolicy{Name: "svc-user", Rules: `service "user." { write }`}}); err != nil {
		t.Fatal(err)
	}
	userSecret := secret()
	req := &pb.ACLTokenCreateRequest{Description: "user service", Policies: []string{"svc-user"}, Secret: userSecret}
	tok1, err := s.TokenCreate(ctx, req)
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	tok2, err := s.TokenCreate(ctx, req)
	if err != nil {
		t.Fatalf("token create sent again: %v, want success", err)
	}
	if tok2.Token.GetAccessorId() != tok1.Token.GetAccessorId() || tok2.Secret != userSecret {
		t.Fatalf("repeated token create answered %v, want the first's %v", tok2.Token, tok1.Token)
	}
	if n := len(fsm.ACLTokens()); n != 2 {
		t.Fatalf("%d tokens after bootstrap and a repeated token create, want 2", n)
	}
	// A client that sends no secret gets one made by the agent.
	old, err := s.TokenCreate(ctx, &pb.ACLTokenCreateRequest{Policies: []string{"svc-user"}})
	if err != nil || acl.ValidateSecret("secret", old.Secret) != nil || old.Token.GetAccessorId() == tok1.Token.GetAccessorId() {
		t.Fatalf("token create without a secret: %v, %v", old, err)
	}
}
