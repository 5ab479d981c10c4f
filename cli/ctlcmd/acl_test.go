package ctlcmd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/internal/acltest"
	"github.com/zrpcio/zrpc/raftstore"
)

// created is the JSON of a bootstrap or a token create.
type created struct {
	Token struct {
		AccessorID string `json:"accessor_id"`
	} `json:"token"`
	Secret string `json:"secret"`
}

func parseCreated(t *testing.T, res runResult) created {
	t.Helper()
	if res.err != nil {
		t.Fatalf("zrpcctl: %v\n%s", res.err, res.stderr)
	}
	var c created
	if err := json.Unmarshal([]byte(res.stdout), &c); err != nil || c.Secret == "" || c.Token.AccessorID == "" {
		t.Fatalf("output %q: %v; want a token and its secret", res.stdout, err)
	}
	return c
}

// The ACL walk-through with zrpcctl: bootstrap once, create a policy and
// a token with the management token from a file, and the new token from
// $ZRPC_TOKEN may register user.rpc but not order.rpc.
func TestACLCommands(t *testing.T) {
	t.Setenv(addrEnv, "")
	t.Setenv(tokenEnv, "")
	addr := acltest.Start(t, raftstore.NewFSM(16))
	ctx := testContext(t)
	run := func(args ...string) runResult { return runZrpcctl(ctx, t, addr, args...) }
	register := func(service string) runResult {
		return run("service", "register", service, "--id", "i1", "--address", "127.0.0.1:9000")
	}

	res := register("user.rpc")
	if res.err == nil {
		t.Fatal("register without a token succeeded")
	}
	checkContains(t, "register without a token", res.err.Error(), "no token", "--token-file or $ZRPC_TOKEN")

	res = run("acl", "bootstrap")
	if res.err != nil {
		t.Fatalf("bootstrap: %v\n%s", res.err, res.stderr)
	}
	checkContains(t, "bootstrap stdout", res.stdout, "AccessorID:", "SecretID:", "Policies:", "management")
	checkContains(t, "bootstrap stderr", res.stderr, "no agent can show it again")
	secret := strings.TrimSpace(strings.SplitN(strings.SplitN(res.stdout, "SecretID:", 2)[1], "\n", 2)[0])
	if res = run("acl", "bootstrap"); res.err == nil || !strings.Contains(res.err.Error(), "ACLs already bootstrapped") {
		t.Fatalf("second bootstrap: %v, want \"ACLs already bootstrapped\"", res.err)
	}

	file := filepath.Join(t.TempDir(), "mgmt.token")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := func(args ...string) runResult { return run(append([]string{"--token-file", file}, args...)...) }
	res = admin("acl", "policy", "create", "svc-user", "--rules", `service "user." { write }`)
	if res.err != nil {
		t.Fatalf("policy create: %v\n%s", res.err, res.stderr)
	}
	checkContains(t, "policy create", res.stdout, "svc-user", `service "user." { write }`)
	res = admin("acl", "policy", "create", "bad", "--rules", `service { write }`)
	if res.err == nil {
		t.Fatal("policy with bad rules created")
	}
	checkContains(t, "bad rules", res.err.Error(), "policy.rules", "rules:1:9", "expected a quoted name prefix")

	user := parseCreated(t, admin("acl", "token", "create", "--policy", "svc-user", "--description", "user service", "-o", "json"))
	t.Setenv(tokenEnv, user.Secret)
	if res = register("user.rpc"); res.err != nil {
		t.Fatalf("user token registering user.rpc: %v\n%s", res.err, res.stderr)
	}
	res = register("order.rpc")
	if res.err == nil {
		t.Fatal("user token registered order.rpc")
	}
	checkContains(t, "register order.rpc", res.err.Error(), `permission denied: token lacks service:write on "order.rpc"`)
	t.Setenv(tokenEnv, "")

	res = admin("acl", "policy", "list")
	checkContains(t, "policy list", res.stdout, "NAME", "svc-user")
	res = admin("acl", "policy", "read", "svc-user")
	checkContains(t, "policy read", res.stdout, `service "user." { write }`)
	res = admin("acl", "token", "list")
	checkContains(t, "token list", res.stdout, user.Token.AccessorID, "user service", "svc-user")
	if strings.Contains(res.stdout, user.Secret) || strings.Contains(res.stdout, secret) {
		t.Fatal("token list prints a secret")
	}
	res = admin("acl", "token", "read", user.Token.AccessorID)
	checkContains(t, "token read", res.stdout, "user service")
	res = admin("acl", "policy", "delete", "svc-user")
	if res.err == nil || !strings.Contains(res.err.Error(), user.Token.AccessorID) {
		t.Fatalf("deleting a policy a token names: %v, want an error naming the token", res.err)
	}
	if res = admin("acl", "token", "delete", user.Token.AccessorID); res.err != nil {
		t.Fatalf("token delete: %v", res.err)
	}
	if res = admin("acl", "policy", "delete", "svc-user"); res.err != nil {
		t.Fatalf("policy delete: %v", res.err)
	}
	checkContains(t, "policy delete", res.stdout, "deleted policy svc-user")
}

func TestACLTokenFlags(t *testing.T) {
	t.Setenv(addrEnv, "")
	t.Setenv(tokenEnv, "")
	addr := acltest.Start(t, raftstore.NewFSM(16))
	ctx := testContext(t)
	res := runZrpcctl(ctx, t, addr, "--token", "zrpc_x", "acl", "policy", "list")
	checkContains(t, "--token stderr", res.stderr, "visible to other users in the process list", "--token-file")
	res = runZrpcctl(ctx, t, addr, "--token", "a", "--token-file", "f", "acl", "policy", "list")
	if res.err == nil || !strings.Contains(res.err.Error(), "both set") {
		t.Fatalf("--token and --token-file: %v, want an error", res.err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	res = runZrpcctl(ctx, t, addr, "--token-file", empty, "acl", "policy", "list")
	if res.err == nil || !strings.Contains(res.err.Error(), "is empty") {
		t.Fatalf("empty --token-file: %v, want an error", res.err)
	}
	res = runZrpcctl(ctx, t, addr, "--token-file", filepath.Join(t.TempDir(), "missing"), "acl", "policy", "list")
	if res.err == nil || !strings.Contains(res.err.Error(), "--token-file") {
		t.Fatalf("missing --token-file: %v, want an error naming it", res.err)
	}
}
