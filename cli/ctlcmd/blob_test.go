package ctlcmd

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// blobEnv is a real three-agent cluster and a scratch directory for the
// blob commands.
type blobEnv struct {
	addr string
	dir  string
}

func newBlobEnv(t *testing.T) *blobEnv {
	t.Setenv(addrEnv, "")
	// Small blocks, so that a few hundred KiB make several blocks.
	c := testcluster.New(t, 3, testcluster.WithConfig(func(cfg *node.Config) { cfg.BlobBlockSize = 64 << 10 }))
	return &blobEnv{addr: c.GRPCAddr(0), dir: t.TempDir()}
}

// run runs zrpcctl against the cluster.
func (e *blobEnv) run(t *testing.T, args ...string) runResult {
	t.Helper()
	return runZrpcctl(testContext(t), t, e.addr, args...)
}

// ok runs zrpcctl and fails the test unless it succeeds.
func (e *blobEnv) ok(t *testing.T, args ...string) runResult {
	t.Helper()
	res := e.run(t, args...)
	if res.err != nil {
		t.Fatalf("zrpcctl %s: %v\nstderr:\n%s", strings.Join(args, " "), res.err, res.stderr)
	}
	return res
}

// fails runs zrpcctl and fails the test unless it fails and its stderr
// contains every one of wants.
func (e *blobEnv) fails(t *testing.T, args []string, wants ...string) {
	t.Helper()
	res := e.run(t, args...)
	if res.err == nil {
		t.Fatalf("zrpcctl %s succeeded, want an error", strings.Join(args, " "))
	}
	for _, want := range wants {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("zrpcctl %s: stderr does not contain %q:\n%s", strings.Join(args, " "), want, res.stderr)
		}
	}
}

// file writes n pseudo-random bytes (from seed) to name in the scratch
// directory and returns its path and bytes.
func (e *blobEnv) file(t *testing.T, name string, n int, seed uint64) (string, []byte) {
	t.Helper()
	data := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	path := filepath.Join(e.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, data
}

// read returns the bytes of a file, failing the test if it cannot.
func (e *blobEnv) read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkContains fails the test unless out contains every one of wants.
func checkContains(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("%s does not contain %q:\n%s", what, want, out)
		}
	}
}

// TestBlobAgainstCluster runs the blob commands against real agents:
// put, ls, stat, get (whole, range, stdout, into a directory), rm and
// repair status, put from stdin, and their errors.
func TestBlobAgainstCluster(t *testing.T) {
	e := newBlobEnv(t)
	const name = "models/v3.bin"
	src, data := e.file(t, "model.bin", 300<<10, 1)
	sum := sha256.Sum256(data)

	// put: JSON result with the size, digest and scheme the agent chose.
	res := e.ok(t, "blob", "put", src, "--name", name, "-o", "json")
	var put zrpcpb.BlobPutResponse
	if err := protojson.Unmarshal([]byte(res.stdout), &put); err != nil {
		t.Fatalf("put -o json is not a BlobPutResponse (%v):\n%s", err, res.stdout)
	}
	b := put.GetBlob()
	if b.GetName() != name || b.GetSize() != uint64(len(data)) || !bytes.Equal(b.GetSha256(), sum[:]) || b.GetDataShards() == 0 {
		t.Fatalf("put stored %v, want %s of %d bytes with SHA-256 %x, erasure-coded", b, name, len(data), sum)
	}
	scheme := fmt.Sprintf("%d+%d", b.GetDataShards(), b.GetParityShards())

	// put, table: the name defaults to the file's base name.
	res = e.ok(t, "blob", "put", src)
	checkContains(t, "put output", res.stdout, "Name:     model.bin\n", "Size:     300.0 KiB (307200 bytes)\n",
		"K+M:      "+scheme+"\n", fmt.Sprintf("SHA-256:  %x\n", sum))

	t.Run("ls", func(t *testing.T) {
		res := e.ok(t, "blob", "ls", "models/")
		lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") {
			t.Fatalf("ls models/ printed %d lines, want a header and one blob:\n%s", len(lines), res.stdout)
		}
		if f := strings.Fields(lines[1]); len(f) < 6 || f[0] != name || f[1]+" "+f[2] != "300.0 KiB" || f[3] != scheme || f[4] != "healthy" {
			t.Errorf("ls row = %q, want %s  300.0 KiB  %s  healthy  CREATED", lines[1], name, scheme)
		}
		for _, h := range []string{"NAME", "SIZE", "K+M", "HEALTH", "CREATED"} {
			checkContains(t, "ls header", lines[0], h)
		}
		var list []map[string]any
		res = e.ok(t, "blob", "ls", "-o", "json")
		if err := json.Unmarshal([]byte(res.stdout), &list); err != nil || len(list) != 2 {
			t.Fatalf("ls -o json = %v, want an array of 2 blobs:\n%s", err, res.stdout)
		}
		if list[1]["name"] != name || list[1]["size"] != "307200" || list[1]["health"] != "healthy" {
			t.Errorf("ls -o json entry = %v", list[1])
		}
	})

	t.Run("stat", func(t *testing.T) {
		res := e.ok(t, "blob", "stat", name)
		checkContains(t, "stat output", res.stdout, "Health:           healthy\n", "K+M:              "+scheme+"\n",
			"Blocks:           5 of 64.0 KiB\n", "Shards per agent: n1 ", "n2 ", "n3 ")
		if strings.Contains(res.stdout, "not ok") {
			t.Errorf("a healthy blob lists shards not ok:\n%s", res.stdout)
		}
		var st zrpcpb.BlobStatResponse
		res = e.ok(t, "blob", "stat", name, "-o", "json")
		if err := protojson.Unmarshal([]byte(res.stdout), &st); err != nil {
			t.Fatalf("stat -o json is not a BlobStatResponse (%v):\n%s", err, res.stdout)
		}
		want := 5 * int(b.GetDataShards()+b.GetParityShards())
		if st.GetHealth() != "healthy" || len(st.GetShards()) != want {
			t.Errorf("stat: health %q, %d shards, want healthy and %d", st.GetHealth(), len(st.GetShards()), want)
		}
	})

	t.Run("get", func(t *testing.T) {
		dest := filepath.Join(e.dir, "v3.bin")
		res := e.ok(t, "blob", "get", name, dest)
		if !bytes.Equal(e.read(t, dest), data) {
			t.Fatal("the downloaded file differs from the one put")
		}
		checkContains(t, "get output", res.stdout, "SHA-256 verified")

		// An existing destination is kept unless --force.
		e.fails(t, []string{"blob", "get", "model.bin", dest}, "destination "+dest+": file already exists; pass --force")
		if !bytes.Equal(e.read(t, dest), data) {
			t.Fatal("a refused get changed the destination")
		}
		e.ok(t, "blob", "get", "model.bin", dest, "--force")

		// A range, to stdout, into a directory.
		part := filepath.Join(e.dir, "part.bin")
		res = e.ok(t, "blob", "get", name, part, "--offset", "70000", "--length", "100000")
		if !bytes.Equal(e.read(t, part), data[70000:170000]) {
			t.Error("the range read differs from the bytes put")
		}
		checkContains(t, "ranged get output", res.stdout, "not checked against the digest")
		res = e.ok(t, "blob", "get", name, "-")
		if res.stdout != string(data) {
			t.Errorf("get to stdout wrote %d bytes, not the %d put", len(res.stdout), len(data))
		}
		sub := filepath.Join(e.dir, "sub")
		if err := os.Mkdir(sub, 0o700); err != nil {
			t.Fatal(err)
		}
		e.ok(t, "blob", "get", name, sub)
		if !bytes.Equal(e.read(t, filepath.Join(sub, "v3.bin")), data) {
			t.Error("get into a directory did not write DIR/v3.bin")
		}
		// Without DEST: NAME's base name in the current directory.
		t.Chdir(sub)
		if err := os.Remove("v3.bin"); err != nil {
			t.Fatal(err)
		}
		e.ok(t, "blob", "get", name)
		if !bytes.Equal(e.read(t, filepath.Join(sub, "v3.bin")), data) {
			t.Error("get without DEST did not write ./v3.bin")
		}
		checkDirHolds(t, e.dir, "model.bin", "part.bin", "sub", "v3.bin")
	})

	t.Run("errors", func(t *testing.T) {
		e.fails(t, []string{"blob", "put", src, "--name", name}, "already exists", "Hint: choose another --name, or pass --overwrite")
		// Three agents cannot hold 3+2 shards, nor the 4 a best-effort 3+2 put needs.
		e.fails(t, []string{"blob", "put", src, "--name", "models/wide", "--data", "3", "--parity", "2"},
			"not enough shards", "Hint: too few agents are alive for this k+m", "pass --best-effort")
		e.fails(t, []string{"blob", "put", src, "--name", "models/wide", "--data", "3", "--parity", "2", "--best-effort"},
			"not enough shards", "Hint: too few agents are alive even for --best-effort")
		e.fails(t, []string{"blob", "put", src, "--name", "../x"}, "invalid argument", `".." path segment`)
		e.fails(t, []string{"blob", "get", "../x", filepath.Join(e.dir, "x")}, "invalid argument")
		e.fails(t, []string{"blob", "get", "models/none", filepath.Join(e.dir, "none")}, "not found", "Hint: `zrpcctl blob ls [PREFIX]`")
		e.fails(t, []string{"blob", "stat", "models/none"}, "not found")
		checkDirHolds(t, e.dir, "model.bin", "part.bin", "sub", "v3.bin")
	})

	t.Run("overwrite", func(t *testing.T) {
		src2, data2 := e.file(t, "model2.bin", 200<<10, 2)
		e.ok(t, "blob", "put", src2, "--name", name, "--overwrite")
		if res := e.ok(t, "blob", "get", name, "-"); res.stdout != string(data2) {
			t.Error("get after --overwrite did not return the new bytes")
		}
	})

	t.Run("repair status", func(t *testing.T) {
		res := e.ok(t, "blob", "repair", "status")
		checkContains(t, "repair status", res.stdout, "Leader:", "Queued:", "In progress:", "Waiting:",
			"Retrying:", "Rebuilt shards:", "Rebuilt bytes:", "Failed:", "Last error:", "Last scan:")
		var st zrpcpb.RepairStatusResponse
		res = e.ok(t, "blob", "repair", "status", "-o", "json")
		if err := protojson.Unmarshal([]byte(res.stdout), &st); err != nil || st.GetLeader() == "" {
			t.Errorf("repair status -o json = %v, leader %q:\n%s", err, st.GetLeader(), res.stdout)
		}
	})

	t.Run("rm", func(t *testing.T) {
		res := e.ok(t, "blob", "rm", name)
		checkContains(t, "rm output", res.stdout, "deleted "+name)
		e.ok(t, "blob", "rm", "model.bin")
		if res := e.ok(t, "blob", "ls"); strings.TrimSpace(res.stdout) != "NAME  SIZE  K+M  HEALTH  CREATED" {
			t.Errorf("ls after rm:\n%s", res.stdout)
		}
		e.fails(t, []string{"blob", "get", name, "-"}, "not found")
	})

	t.Run("put from stdin", func(t *testing.T) {
		_, data := e.file(t, "in", 150<<10, 3)
		res := runZrpcctlStdin(testContext(t), t, e.addr, bytes.NewReader(data), "blob", "put", "-", "--name", "logs/in.tar")
		if res.err != nil {
			t.Fatalf("put from stdin: %v\n%s", res.err, res.stderr)
		}
		if res := e.ok(t, "blob", "get", "logs/in.tar", "-"); res.stdout != string(data) {
			t.Fatal("get returned other bytes than stdin carried")
		}
	})
}

// TestBlobPutOnAFullAgentSaysSo: a put whose shards find no room on the
// agent (its shard store at --shard-max-bytes, as a full disk) fails
// naming the lack of space and hints to free some, whether zrpcctl sends
// the shards itself or through the agent, which answers only "not enough
// shards" with the cause in its message.
func TestBlobPutOnAFullAgentSaysSo(t *testing.T) {
	t.Setenv(addrEnv, "")
	c := testcluster.New(t, 1, testcluster.WithConfig(func(cfg *node.Config) {
		cfg.BlobBlockSize = 64 << 10
		cfg.ShardMaxBytes = 128 << 10
	}))
	e := &blobEnv{addr: c.GRPCAddr(0), dir: t.TempDir()}
	src, _ := e.file(t, "big.bin", 512<<10, 3)
	for _, extra := range [][]string{nil, {"--through-agent"}} {
		args := append([]string{"blob", "put", src, "--name", "big"}, extra...)
		e.fails(t, args, "no space for shard", "Hint: an agent's shard store is full")
	}
}
