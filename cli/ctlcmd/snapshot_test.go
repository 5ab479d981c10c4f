package ctlcmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/testcluster"
)

// TestSnapshotSaveInspectRestore: save writes a verified file and nothing
// else, inspect reports what it holds, and restore (confirmed) brings the
// registry back to it; unconfirmed or damaged, restore changes nothing.
func TestSnapshotSaveInspectRestore(t *testing.T) {
	t.Setenv(addrEnv, "")
	c := testcluster.New(t, 1)
	reg := c.Registry(0)
	register := func(ids ...string) {
		for _, id := range ids {
			inst := &zrpcpb.Instance{Service: "user.rpc", Id: id, Address: "127.0.0.1:9000"}
			if _, err := reg.Register(testContext(t), &zrpcpb.RegisterRequest{Instance: inst}); err != nil {
				t.Fatal(err)
			}
		}
	}
	ids := func() string {
		resp, err := reg.Get(testContext(t), &zrpcpb.GetRequest{Service: "user.rpc"})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, in := range resp.Instances {
			out = append(out, in.Id)
		}
		return strings.Join(out, ",")
	}
	register("a", "b", "c")
	run := func(args ...string) runResult { return runZrpcctl(testContext(t), t, c.GRPCAddr(0), args...) }
	dir := t.TempDir()
	path := filepath.Join(dir, "backup.snap")

	res := run("snapshot", "save", path)
	if res.err != nil {
		t.Fatalf("save: %v\n%s", res.err, res.stderr)
	}
	checkContains(t, "save stdout", res.stdout, "saved and verified "+path, "3 instances", "sha256 ")
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("save left %v in the directory, want only the snapshot", entries)
	}
	stale := filepath.Join(t.TempDir(), "stale.snap")
	res = run("snapshot", "save", "--stale", stale)
	if res.err != nil {
		t.Fatalf("save --stale: %v\n%s", res.err, res.stderr)
	}
	checkContains(t, "save --stale stdout", res.stdout, "saved and verified "+stale, "3 instances")
	if res := run("snapshot", "save", filepath.Join(dir, "nosuchdir", "x.snap")); res.err == nil || !strings.Contains(res.err.Error(), "was not written") {
		t.Fatalf("save into a missing directory: %v", res.err)
	}

	res = run("snapshot", "inspect", path)
	if res.err != nil {
		t.Fatal(res.err)
	}
	checkContains(t, "inspect", res.stdout, "Instances:", "SHA-256:", "Revision:")
	if !strings.Contains(strings.Join(strings.Fields(res.stdout), " "), "Instances: 3") {
		t.Fatalf("inspect does not count 3 instances:\n%s", res.stdout)
	}
	res = run("-o", "json", "snapshot", "inspect", path)
	checkContains(t, "inspect json", res.stdout, `"instances": "3"`, `"services": "1"`)

	register("d")
	res = runZrpcctlStdin(testContext(t), t, c.GRPCAddr(0), strings.NewReader("yes\n"), "snapshot", "restore", path)
	if res.err == nil || !strings.Contains(res.err.Error(), "--yes") {
		t.Fatalf("restore without --yes and no terminal: %v", res.err)
	}
	data, _ := os.ReadFile(path)
	bad := filepath.Join(dir, "bad.snap")
	data[len(data)/2] ^= 1
	if err := os.WriteFile(bad, data, 0o600); err != nil {
		t.Fatal(err)
	}
	res = run("snapshot", "restore", bad, "--yes")
	if res.err == nil || !strings.Contains(res.err.Error(), "refusing to restore") || !strings.Contains(res.err.Error(), "corrupt") {
		t.Fatalf("restore of a damaged file: %v", res.err)
	}
	if got := ids(); got != "a,b,c,d" {
		t.Fatalf("a refused restore changed the registry: %s", got)
	}

	res = run("snapshot", "restore", path, "--yes")
	if res.err != nil {
		t.Fatalf("restore: %v\n%s", res.err, res.stderr)
	}
	checkContains(t, "restore stdout", res.stdout, "restored "+path, "the registry is at revision")
	if got := ids(); got != "a,b,c" {
		t.Fatalf("after the restore the registry holds %s, want a,b,c", got)
	}
}

// With stdin not a terminal (/dev/null, a character device, included)
// and no --yes, restore refuses at once, before it reads the file or
// contacts an agent, and says to pass --yes.
func TestSnapshotRestoreWithoutTerminalAsksForYes(t *testing.T) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	missing := filepath.Join(t.TempDir(), "never-read.snap")
	res := runZrpcctlStdin(testContext(t), t, "127.0.0.1:1", devnull, "snapshot", "restore", missing)
	if res.err == nil || !strings.Contains(res.err.Error(), "--yes") || !strings.Contains(res.err.Error(), "nothing was changed") {
		t.Fatalf("restore from /dev/null without --yes: %v; want a refusal naming --yes", res.err)
	}
	if isTerminal(devnull) {
		t.Fatalf("%s counts as a terminal", os.DevNull)
	}
}
