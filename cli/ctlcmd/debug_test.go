package ctlcmd

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/tlsconf"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// readArchive returns the files of a .tar.gz by name.
func readArchive(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open the archive: %v", err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s is not gzip: %v", path, err)
	}
	tr := tar.NewReader(gz)
	files := map[string][]byte{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if hdr.ModTime.After(time.Now()) { // tar would warn when extracting it
			t.Errorf("%s: %s is dated %s, in the future", path, hdr.Name, hdr.ModTime)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%s: %s: %v", path, hdr.Name, err)
		}
		files[hdr.Name] = b
	}
}

func readIndex(t *testing.T, files map[string][]byte) debugIndex {
	t.Helper()
	var idx debugIndex
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatalf("index.json: %v\n%s", err, files["index.json"])
	}
	return idx
}

// debugCluster is one agent with ACLs, a cluster token (mutual TLS) and a
// gossip key, and its management token; tlsArgs are zrpcctl's TLS flags.
func debugCluster(t *testing.T) (c *testcluster.Cluster, clusterToken, gossipKey, mgmt string, tlsArgs []string) {
	t.Setenv(addrEnv, "")
	t.Setenv(tokenEnv, "")
	clusterToken = "debug-test-cluster-token-0123456789abcdef"
	gossipKey, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c = testcluster.New(t, 1, testcluster.WithClusterToken(clusterToken), testcluster.WithConfig(func(cfg *node.Config) {
		cfg.ACL = true
		cfg.EncryptKey = gossipKey
		ca, cert, key := cfg.TokenCertificateFiles()
		tlsArgs = []string{"--tls-ca", ca, "--tls-cert", cert, "--tls-key", key}
	}))
	cl, err := client.New(client.Config{Endpoints: []string{c.GRPCAddr(0)}, TLS: debugTLS(t, tlsArgs)})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	_, mgmt, err = cl.ACLBootstrap(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	return c, clusterToken, gossipKey, mgmt, tlsArgs
}

// TestDebugCapturesAnAgent runs zrpcctl debug against an agent with ACLs
// and TLS: the archive holds every expected capture, non-empty, and none
// of the cluster's secrets (the cluster token, the gossip key, the token
// zrpcctl sent). A token without operator:read gets the open captures
// and a list of the refused ones; Ctrl-C writes what was captured.
func TestDebugCapturesAnAgent(t *testing.T) {
	c, clusterToken, gossipKey, mgmt, tlsArgs := debugCluster(t)
	dir := t.TempDir()
	debug := func(ctx context.Context, errOut *testlog.Buffer, token string, args ...string) runResult {
		t.Helper()
		t.Setenv(tokenEnv, token)
		args = append(append(slices.Clone(tlsArgs), "debug", "--http-addr", c.Node(0).HTTPAddr()), args...)
		return runZrpcctlTo(ctx, t, &testlog.Buffer{}, errOut, c.GRPCAddr(0), args...)
	}

	out := filepath.Join(dir, "full.tar.gz")
	var progress testlog.Buffer
	res := debug(testContext(t), &progress, mgmt, "--duration", "2s", "--interval", "1s", "--output", out)
	if res.err != nil {
		t.Fatalf("debug: %v\n%s", res.err, res.stderr)
	}
	checkContains(t, "progress", res.stderr, "Capturing from agent n1", "Sample 3/3", "CPU profile over 2s", "Wrote "+out)
	files := readArchive(t, out)
	want := []string{"index.json", "version.json", "status.json", "peers.json", "repair.json", "config.json",
		"cpu.pprof", "heap.pprof", "goroutine.txt", "logs.txt", "watches.txt"}
	for i := range 3 {
		for _, f := range []string{"metrics.prom", "status.json", "members.json"} {
			want = append(want, filepath.Join("interval-0"+string(rune('0'+i)), f))
		}
	}
	for _, name := range want {
		if len(files[name]) == 0 {
			t.Errorf("the archive's %s is missing or empty (archive holds %v)", name, slices.Sorted(maps.Keys(files)))
		}
	}
	for name, b := range files {
		for what, secret := range map[string]string{"cluster token": clusterToken, "gossip key": gossipKey, "zrpcctl's token": mgmt} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("the archive's %s holds the %s", name, what)
			}
		}
	}
	checkContains(t, "config.json", string(files["config.json"]), `"encrypt": "REDACTED"`, `"cluster_token": "REDACTED"`, `"acl": "true"`)
	checkContains(t, "members.json", string(files["interval-00/members.json"]), `"name": "n1"`, `"status": "alive"`)
	checkContains(t, "logs.txt", string(files["logs.txt"]), "agent started")
	checkContains(t, "watches.txt", string(files["watches.txt"]), "zrpc_registry_watchers")
	if idx := readIndex(t, files); len(idx.Failed) != 0 || idx.Node != "n1" || idx.Interrupted || len(idx.Files) != len(files)-1 {
		t.Errorf("index.json: node %q, interrupted %v, %d files listed of %d, failed %v", idx.Node, idx.Interrupted, len(idx.Files), len(files)-1, idx.Failed)
	}

	// A token that may read services but not the operator's captures.
	admin, err := client.New(client.Config{Endpoints: []string{c.GRPCAddr(0)}, Token: mgmt, TLS: debugTLS(t, tlsArgs)})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.ACLPolicyCreate(testContext(t), "reader", "", `service "" { read }`); err != nil {
		t.Fatal(err)
	}
	_, reader, err := admin.ACLTokenCreate(testContext(t), "", "reader")
	if err != nil {
		t.Fatal(err)
	}
	out = filepath.Join(dir, "refused.tar.gz")
	res = debug(testContext(t), &testlog.Buffer{}, reader, "--duration", "1s", "--interval", "1s", "--output", out)
	if res.err == nil || !strings.Contains(res.err.Error(), "captures failed") {
		t.Fatalf("debug with a token lacking operator:read: %v, want an error saying captures failed\n%s", res.err, res.stderr)
	}
	files = readArchive(t, out)
	if len(files["interval-00/metrics.prom"]) == 0 {
		t.Errorf("refused captures: the open metrics sample is missing")
	}
	failed := map[string]string{}
	for _, f := range readIndex(t, files).Failed {
		failed[f.Capture] = f.Error
	}
	for _, name := range []string{"cpu.pprof", "config.json", "logs.txt", "status.json"} {
		if _, inArchive := files[name]; inArchive || !strings.Contains(failed[name], "operator:read") {
			t.Errorf("%s: in the archive %v, failure %q; want it refused, naming operator:read", name, inArchive, failed[name])
		}
	}

	// Ctrl-C after the second sample: the archive holds what was taken.
	out = filepath.Join(dir, "interrupted.tar.gz")
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	progress = testlog.Buffer{}
	go func() {
		for !strings.Contains(progress.String(), "Sample 2/") {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	res = debug(ctx, &progress, mgmt, "--duration", "1m", "--interval", "500ms", "--output", out)
	files = readArchive(t, out)
	if idx := readIndex(t, files); !idx.Interrupted || len(files["interval-00/metrics.prom"]) == 0 || len(files["watches.txt"]) == 0 {
		t.Fatalf("interrupted debug (%v): index interrupted %v, files %v", res.err, idx.Interrupted, slices.Sorted(maps.Keys(files)))
	}
	checkContains(t, "progress", progress.String(), "Interrupted: writing what was captured")
	if res.err == nil || !strings.Contains(res.err.Error(), "interrupted after") || !strings.Contains(res.err.Error(), out) {
		t.Errorf("interrupted debug: %v, want an error saying it was interrupted and naming the archive", res.err)
	}
	if names, _ := filepath.Glob(filepath.Join(dir, ".zrpc-debug-*")); len(names) != 0 {
		t.Errorf("temporary files left behind: %v", names)
	}
}

// debugTLS is the TLS configuration zrpcctl makes of tlsArgs.
func debugTLS(t *testing.T, tlsArgs []string) *tls.Config {
	t.Helper()
	tc, err := (&tlsFlags{files: tlsconf.Files{CA: tlsArgs[1], Cert: tlsArgs[3], Key: tlsArgs[5]}}).config()
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// TestDebugRefusesBadFlagsAndUnreachableAgents: flags that cannot make a
// capture and an agent that does not answer are errors, and no archive
// is written.
func TestDebugRefusesBadFlagsAndUnreachableAgents(t *testing.T) {
	t.Setenv(addrEnv, "")
	dir := t.TempDir()
	exists := filepath.Join(dir, "exists.tar.gz")
	os.WriteFile(exists, nil, 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--duration", "0s"}, "invalid --duration"},
		{[]string{"--duration", "2h"}, "invalid --duration"},
		{[]string{"--interval", "1m"}, "longer than --duration"},
		{[]string{"--interval", "1ms"}, "invalid --interval"},
		{[]string{"--http-addr", "nowhere"}, "invalid --http-addr"},
		{[]string{"--output", filepath.Join(dir, "nosuchdir", "x.tar.gz")}, "does not exist"},
		{[]string{"--output", filepath.Join(dir, "notadir")}, "not a directory"},
		{[]string{"--output", exists}, "exists"},
	} {
		res := runZrpcctl(testContext(t), t, "127.0.0.1:1", append([]string{"debug"}, tc.args...)...)
		if res.err == nil || !strings.Contains(res.err.Error(), tc.want) {
			t.Errorf("debug %v: %v, want an error containing %q", tc.args, res.err, tc.want)
		}
	}
	res := runZrpcctl(testContext(t), t, "127.0.0.1:1", "--timeout", "1s", "debug", "--duration", "1s", "--interval", "1s", "--output", dir)
	if res.err == nil || !strings.Contains(res.err.Error(), "no archive written") || !strings.Contains(res.stderr, "is an agent running at 127.0.0.1:1") {
		t.Fatalf("debug of an unreachable agent: %v\n%s", res.err, res.stderr)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("the output directory holds %d entries, want only the file made by the test", len(entries))
	}
}

// TestDebugCapturesOverHTTPFromTheAgentOfAddr: without --http-addr the
// HTTP captures come from the host of --addr, not from whichever agent
// listens on 127.0.0.1 (on one machine, agents bind 127.0.0.2, 127.0.0.3).
func TestDebugCapturesOverHTTPFromTheAgentOfAddr(t *testing.T) {
	t.Setenv(addrEnv, "")
	f := startFake(t)
	_, port, _ := strings.Cut(f.Addr, ":")
	dir := t.TempDir()
	path := filepath.Join(dir, "bug.tar.gz")
	res := runZrpcctl(testContext(t), t, "localhost:"+port, "--timeout", "1s", "debug", "--duration", "1s", "--interval", "1s", "--output", path)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no archive (%v): %v\n%s", err, res.err, res.stderr)
	}
	if idx := readIndex(t, readArchive(t, path)); idx.HTTP != "localhost:8480" {
		t.Fatalf("captured over HTTP from %s, want localhost:8480, the host of --addr", idx.HTTP)
	}
}

// TestDebugArchiveNeverReplacesAFile: a file that takes the archive's
// name during the capture (a zrpcctl debug of another agent, started in
// the same second into the same directory, has the same default name) is
// kept, and the archive takes the next free name.
func TestDebugArchiveNeverReplacesAFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "zrpc-debug-20260102T030405Z.tar.gz")
	var archives []*debugArchive
	for range 2 {
		a, err := newDebugArchive(path)
		if err != nil {
			t.Fatal(err)
		}
		archives = append(archives, a)
	}
	for i, a := range archives {
		a.add("status.json", []byte(fmt.Sprintf("{\"capture\": %d}\n", i)))
		if _, _, err := a.finish(&debugIndex{}); err != nil {
			t.Fatalf("archive %d: %v", i, err)
		}
	}
	second := filepath.Join(dir, "zrpc-debug-20260102T030405Z-2.tar.gz")
	if archives[0].path != path || archives[1].path != second {
		t.Fatalf("the archives took the names %s and %s, want %s and %s", archives[0].path, archives[1].path, path, second)
	}
	for i, p := range []string{path, second} {
		if got, want := string(readArchive(t, p)["status.json"]), fmt.Sprintf("{\"capture\": %d}\n", i); got != want {
			t.Errorf("%s holds status.json %q, want %q: an archive replaced another", p, got, want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("the directory holds %d entries, want the 2 archives and no temporary file", len(entries))
	}
}

// TestDebugStopsWhenTheArchiveCannotBeWritten: an archive that cannot be
// written (a full disk) ends the capture at once with that error, instead
// of capturing for the whole --duration first, and leaves no file.
func TestDebugStopsWhenTheArchiveCannotBeWritten(t *testing.T) {
	t.Setenv(addrEnv, "")
	f := startFake(t)
	dir := t.TempDir()
	create := createArchiveTemp
	t.Cleanup(func() { createArchiveTemp = create })
	createArchiveTemp = func(dir, pattern string) (*os.File, error) {
		tmp, err := create(dir, pattern)
		if err != nil {
			return nil, err
		}
		tmp.Close()
		return os.Open(tmp.Name()) // read-only: every write fails, as on a full disk
	}
	ctx := testContext(t)
	res := runZrpcctl(ctx, t, f.Addr, "--timeout", "1s", "debug", "--duration", "1h", "--interval", "1s",
		"--http-addr", "127.0.0.1:1", "--output", dir)
	if ctx.Err() != nil {
		t.Fatalf("the capture went on after the archive failed: %v\n%s", res.err, res.stderr)
	}
	if res.err == nil || !strings.Contains(res.err.Error(), "into the archive: ") || !strings.Contains(res.err.Error(), "the capture stopped there") {
		t.Fatalf("debug into an archive that cannot be written: %v, want the write error\n%s", res.err, res.stderr)
	}
	checkDirHolds(t, dir)
}
