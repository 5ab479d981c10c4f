package node_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// The agent serves the web UI at /ui/; with ACLs on its data needs the
// token the gRPC API would need (401 without one, 403 without the
// permission, the caller's services only), while the page itself is
// served to anyone.
func TestUIDataNeedsTheAPIsPermissionsWithACLs(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.WithConfig(func(cfg *node.Config) { cfg.ACL = true }))
	ctx := ctxT(t)
	n := c.Node(0)
	_, mgmt, err := aclClient(t, c, 0, "").ACLBootstrap(ctx)
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	admin := aclClient(t, c, 0, mgmt)
	if _, err := admin.ACLPolicyCreate(ctx, "svc-user", "", `service "user." { write }`); err != nil {
		t.Fatalf("policy create: %v", err)
	}
	_, user, err := admin.ACLTokenCreate(ctx, "user service", "svc-user")
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	for _, svc := range []string{"user.rpc", "order.rpc"} {
		if err := aclRegister(ctx, admin, svc); err != nil {
			t.Fatalf("register %s: %v", svc, err)
		}
	}

	if code, body := httpStatus(t, n, "/ui/api/services", ""); code != http.StatusUnauthorized || !strings.Contains(body, "needs a token with service:read") {
		t.Errorf("services without a token: %d %q, want 401 saying a token with service:read is needed", code, body)
	}
	if code, body := httpStatus(t, n, "/ui/api/members", user); code != http.StatusForbidden || !strings.Contains(body, "operator:read") {
		t.Errorf("members with a token lacking operator:read: %d %q, want 403 naming it", code, body)
	}
	code, body := httpStatus(t, n, "/ui/api/services", user)
	var got struct{ Services []struct{ Name string } }
	if err := json.Unmarshal([]byte(body), &got); code != http.StatusOK || err != nil || len(got.Services) != 1 || got.Services[0].Name != "user.rpc" {
		t.Errorf("services with a user.* token: %d %s, want user.rpc only", code, body)
	}
	if code, body := httpStatus(t, n, "/ui/api/members", mgmt); code != http.StatusOK || !strings.Contains(body, `"name":"`+n.Name()+`"`) {
		t.Errorf("members with the management token: %d %s, want this agent listed", code, body)
	}
	if code, body := httpStatus(t, n, "/ui/", ""); code != http.StatusOK || !strings.Contains(body, "/ui/static/app.js") {
		t.Errorf("the page without a token: %d %q, want 200", code, body)
	}
}

// With ACLs off, the UI's data is this agent's own state: the registry
// replica and the Raft configuration it leads.
func TestUIShowsTheAgentsOwnState(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(0)
	cl := aclClient(t, c, 0, "")
	if err := aclRegister(ctx, cl, "user.rpc"); err != nil {
		t.Fatalf("register: %v", err)
	}
	code, body := httpStatus(t, n, "/ui/api/services/user.rpc", "")
	if code != http.StatusOK || !strings.Contains(body, `"address":"127.0.0.1:9000"`) || !strings.Contains(body, `"node":"`+n.Name()+`"`) {
		t.Errorf("user.rpc: %d %s, want its instance owned by %s", code, body, n.Name())
	}
	code, body = httpStatus(t, n, "/ui/api/raft", "")
	if code != http.StatusOK || !strings.Contains(body, `"leader":"`+n.Name()+`"`) {
		t.Errorf("raft: %d %s, want %s as leader", code, body, n.Name())
	}
}
