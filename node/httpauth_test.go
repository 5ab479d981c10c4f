package node_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// httpStatus GETs path of agent n's HTTP endpoint with token ("" for
// none) and returns the status code and body.
func httpStatus(t *testing.T, n *node.Node, path, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, "http://"+n.HTTPAddr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// With ACLs on, pprof needs a token with operator:read: none or an
// unknown one gets 401 saying a token is needed, one without the
// permission 403 naming it, the management token the profile index;
// /metrics, /healthz and /readyz stay open.
func TestPProfNeedsOperatorReadWithACLs(t *testing.T) {
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

	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline"} {
		if code, body := httpStatus(t, n, path, ""); code != http.StatusUnauthorized || !strings.Contains(body, "needs a token with operator:read") {
			t.Errorf("GET %s without a token: %d %q, want 401 saying a token is needed", path, code, body)
		}
		if code, body := httpStatus(t, n, path, "zrpc_"+strings.Repeat("0", 64)); code != http.StatusUnauthorized || !strings.Contains(body, "token not found") {
			t.Errorf("GET %s with an unknown token: %d %q, want 401", path, code, body)
		}
		if code, body := httpStatus(t, n, path, user); code != http.StatusForbidden || !strings.Contains(body, "operator:read") {
			t.Errorf("GET %s with a token lacking operator:read: %d %q, want 403 naming operator:read", path, code, body)
		}
		if code, body := httpStatus(t, n, path, mgmt); code != http.StatusOK {
			t.Errorf("GET %s with the management token: %d %q, want 200", path, code, body)
		}
	}
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		if code, body := httpStatus(t, n, path, ""); code != http.StatusOK {
			t.Errorf("GET %s without a token: %d %q, want 200", path, code, body)
		}
	}
}

// With ACLs off, pprof is served without a token.
func TestPProfOpenWithoutACLs(t *testing.T) {
	c := testcluster.New(t, 1)
	if code, body := httpStatus(t, c.Node(0), "/debug/pprof/", ""); code != http.StatusOK {
		t.Fatalf("GET /debug/pprof/ with ACLs off: %d %q, want 200", code, body)
	}
}
