package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBlobsThroughCLI stores a multi-block blob on three zrpcd processes
// with `zrpcctl blob` and checks what an operator sees: the put's scheme
// and digest, ls and stat, a get through another agent, a degraded get
// while one agent is killed -9 and the blob's health until it is back,
// repair of a shard file rotted on disk, deletion down to the shard files,
// and a bad name refused with nothing stored.
func TestBlobsThroughCLI(t *testing.T) {
	b := newBlobRun(t)
	b.putListStat()
	b.killAndRestart()
	b.rotAndRepair()
	b.removeEverywhere()
	b.refuseBadName()
}

// blobRun is the test blob (data, from the file src) on a three-agent
// cluster, and the zrpcctl that drives it.
type blobRun struct {
	t          *testing.T
	zrpcctl    string
	n1, n2, n3 *agent
	dir, src   string
	data       []byte
	gets       int
}

const blobName = "e2e/data.bin"

func newBlobRun(t *testing.T) *blobRun {
	t.Helper()
	_, zrpcctl := binaries(t)
	b := &blobRun{t: t, zrpcctl: zrpcctl, dir: t.TempDir()}
	b.n1, b.n2, b.n3 = blobCluster(t)
	b.src = filepath.Join(b.dir, "data.bin")
	// Five blocks of the default 1 MiB and a partial sixth.
	b.data = make([]byte, 5<<20+12345)
	rand.Read(b.data)
	if err := os.WriteFile(b.src, b.data, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// run runs zrpcctl against a and fails the test if it fails.
func (b *blobRun) run(a *agent, args ...string) string {
	b.t.Helper()
	out, err := ctl(b.zrpcctl, a.grpcAddr(), args...)
	if err != nil {
		b.t.Fatal(err)
	}
	return out
}

// get reads the blob through a into a new file and checks its bytes. A
// failed get does not stop the test: the steps after it do not need it.
func (b *blobRun) get(a *agent, what string) {
	b.t.Helper()
	b.gets++
	dst := filepath.Join(b.dir, "out-"+itoa(b.gets)+".bin")
	if _, err := ctl(b.zrpcctl, a.grpcAddr(), "blob", "get", blobName, dst); err != nil {
		b.t.Errorf("%s: %v", what, err)
		return
	}
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, b.data) {
		b.t.Errorf("%s: %d bytes, want %d identical ones (err %v)", what, len(got), len(b.data), err)
	}
}

// putListStat puts through n1 (2+1 for three agents, the file's digest),
// lists and stats it, and reads it back through n2.
func (b *blobRun) putListStat() {
	t := b.t
	sum := sha256.Sum256(b.data)
	digest := hex.EncodeToString(sum[:])
	out := b.run(b.n1, "blob", "put", b.src, "--name", blobName)
	if f := fieldLines(out); f["K+M"] != "2+1" || f["SHA-256"] != digest || f["Name"] != blobName {
		t.Fatalf("blob put printed:\n%s\nwant K+M 2+1 and SHA-256 %s", out, digest)
	}
	ls := rows(b.run(b.n1, "blob", "ls", "e2e/"))
	if len(ls) != 1 || ls[0][0] != blobName || !slices.Contains(ls[0], "2+1") || !slices.Contains(ls[0], "healthy") {
		t.Fatalf("blob ls e2e/ rows = %v, want %s 2+1 healthy", ls, blobName)
	}
	st := blobStat(t, b.zrpcctl, b.n3)
	if st.Health != "healthy" || len(st.Blob.Blocks) != 6 || st.Blob.DataShards != 2 || st.Blob.ParityShards != 1 {
		t.Fatalf("blob stat: health %q, %d blocks of %d+%d; want healthy, 6 blocks of 2+1",
			st.Health, len(st.Blob.Blocks), st.Blob.DataShards, st.Blob.ParityShards)
	}
	for block, holders := range st.holders() {
		if len(holders) != 3 || len(distinct(holders)) != 3 {
			t.Fatalf("blob stat: block %d has shards on %v, want 3 shards on 3 distinct agents", block, holders)
		}
	}
	b.get(b.n2, "get through n2 after the put")
}

// killAndRestart kills n3 with SIGKILL: reads through n2 still work from
// parity, stat turns degraded, and healthy again once n3 runs again on its
// data dir.
func (b *blobRun) killAndRestart() {
	t, n3 := b.t, b.n3
	n3.kill()
	b.get(b.n2, "get through n2 with n3 killed")
	waitFor(t, 20*time.Second, "blob stat degraded with n3's shards node-failed", func() bool {
		st, err := tryBlobStat(b.zrpcctl, b.n1)
		if err != nil || st.Health != "degraded" {
			return false
		}
		for _, s := range st.Shards {
			if s.Node == n3.name && s.State != "node-failed" {
				return false
			}
		}
		return true
	})
	n3.start()
	waitFor(t, 30*time.Second, "blob stat healthy with n3 back", func() bool {
		st, err := tryBlobStat(b.zrpcctl, b.n1)
		return err == nil && st.Health == "healthy"
	})
	// Any agent serves every call: n3 too, once it answers again.
	b.get(n3, "get through n3 just restarted")
}

// rotAndRepair flips a payload byte of a data shard on n1 (on n3 if n1
// holds only parity shards), while the agent runs: a get reads the data
// shards first, so it meets the rotten one. A get through n2 decodes around
// it; the get's report or the scrubber sends it to repair, which rewrites
// the file as it was.
func (b *blobRun) rotAndRepair() {
	t := b.t
	st := blobStat(t, b.zrpcctl, b.n1)
	var shard string
	for _, a := range []*agent{b.n1, b.n3} {
		for _, holders := range st.holders()[:1] { // block 0: its payload starts at a fixed offset
			for index, node := range holders[:st.Blob.DataShards] {
				if node == a.name && shard == "" {
					shard = filepath.Join(a.dataDir, "shards", st.Blob.ID[:2], st.Blob.ID, fmt.Sprintf("%d.part", index))
				}
			}
		}
	}
	orig, err := os.ReadFile(shard)
	if err != nil {
		t.Fatalf("shard file of a data shard not on n2 (holders %v): %v", st.holders(), err)
	}
	const partHeader, frameHeader = 96, 8
	at := partHeader + frameHeader + 100 // in block 0's payload
	rotten := bytes.Clone(orig)
	rotten[at] ^= 0xff
	if err := os.WriteFile(shard, rotten, 0o644); err != nil {
		t.Fatal(err)
	}
	b.get(b.n2, "get through n2 with a payload byte of "+shard+" flipped")
	waitFor(t, 20*time.Second, fmt.Sprintf("repair rewrites %s as it was (byte %d back to %#x)", shard, at, orig[at]), func() bool {
		got, err := os.ReadFile(shard)
		return err == nil && bytes.Equal(got, orig)
	})
}

// removeEverywhere deletes the blob: gone from the registry at once, its
// shard files soon after (deleted on request, or collected as orphans by
// an agent the request missed).
func (b *blobRun) removeEverywhere() {
	t := b.t
	b.run(b.n2, "blob", "rm", blobName)
	var left []string
	defer func() {
		if len(left) > 0 {
			t.Logf("shard files left after rm: %v", left)
		}
	}()
	waitFor(t, 20*time.Second, "no shard files left on any agent", func() bool {
		left = nil
		for _, a := range []*agent{b.n1, b.n2, b.n3} {
			left = append(left, shardFiles(t, a)...)
		}
		return len(left) == 0
	})
	dst := filepath.Join(b.dir, "deleted.bin")
	_, err := ctl(b.zrpcctl, b.n3.grpcAddr(), "blob", "get", blobName, dst)
	if err == nil || !strings.Contains(err.Error(), "exit status") || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("blob get after rm: %v, want a not-found failure", err)
	}
	if exists(dst) {
		t.Fatalf("blob get of a deleted blob created %s", dst)
	}
}

// refuseBadName: a name that climbs out of its directory is refused by
// name, and nothing is stored.
func (b *blobRun) refuseBadName() {
	t := b.t
	_, err := ctl(b.zrpcctl, b.n1.grpcAddr(), "blob", "put", b.src, "--name", "../x")
	if err == nil || !strings.Contains(err.Error(), `"../x"`) {
		t.Fatalf("blob put --name ../x: %v, want a failure naming ../x", err)
	}
	if ls := rows(b.run(b.n1, "blob", "ls")); len(ls) != 0 {
		t.Fatalf("blob ls after rm and a refused put: %v, want none", ls)
	}
}

// blobAgentConfig is the YAML config (node.Config keys) of blobCluster's
// agents; blob_repair_delay is given as a flag.
const blobAgentConfig = `blob_repair_interval: 200ms
blob_scrub_interval: 2s
blob_orphan_grace: 2s
blob_gc_interval: 500ms
`

// blobCluster starts three agents that scrub, repair and collect orphan
// shards within seconds instead of minutes (shards of an agent failed for
// 1s are rebuilt elsewhere, repair scans every 200ms), and waits until n1 shows all three
// alive and in Raft: an agent is recorded in the registry, whose size sets
// a put's default k+m, before it becomes a voter, while gossip shows it
// alive before either.
func blobCluster(t *testing.T) (n1, n2, n3 *agent) {
	t.Helper()
	_, zrpcctl := binaries(t)
	cfg := filepath.Join(t.TempDir(), "zrpcd.yaml")
	if err := os.WriteFile(cfg, []byte(blobAgentConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--gossip-profile", "local", "--config", cfg, "--blob-repair-delay", "1s"}
	n1, n2, n3 = newAgent(t, "n1", flags...), newAgent(t, "n2", flags...), newAgent(t, "n3", flags...)
	n1.start()
	n2.start(n1.gossipAddr())
	n3.start(n1.gossipAddr())
	waitThreeVoters(t, zrpcctl, n1)
	return n1, n2, n3
}

// blobStatJSON is the part of `zrpcctl -o json blob stat` the test reads.
type blobStatJSON struct {
	Blob struct {
		ID           string `json:"id"`
		DataShards   int    `json:"data_shards"`
		ParityShards int    `json:"parity_shards"`
		Blocks       []struct {
			Holders []int `json:"holders"`
		} `json:"blocks"`
	} `json:"blob"`
	Health string `json:"health"`
	Shards []struct {
		Block int    `json:"block"`
		Index int    `json:"index"`
		Node  string `json:"node"`
		State string `json:"state"`
	} `json:"shards"`
}

// holders lists, per block, the agent named for each shard index.
func (st *blobStatJSON) holders() [][]string {
	h := make([][]string, len(st.Blob.Blocks))
	for i, b := range st.Blob.Blocks {
		h[i] = make([]string, len(b.Holders))
	}
	for _, s := range st.Shards {
		if s.Block < len(h) && s.Index < len(h[s.Block]) {
			h[s.Block][s.Index] = s.Node
		}
	}
	return h
}

// tryBlobStat runs `zrpcctl -o json blob stat` for the test's blob.
func tryBlobStat(zrpcctl string, a *agent) (*blobStatJSON, error) {
	out, err := ctlFrom(a.via, zrpcctl, a.grpcAddr(), "-o", "json", "blob", "stat", blobName)
	if err != nil {
		return nil, err
	}
	var st blobStatJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func blobStat(t *testing.T, zrpcctl string, a *agent) *blobStatJSON {
	t.Helper()
	st, err := tryBlobStat(zrpcctl, a)
	if err != nil {
		t.Fatalf("blob stat through %s: %v", a.name, err)
	}
	return st
}

// shardFiles lists the *.part files under a's shard directory.
func shardFiles(t *testing.T, a *agent) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(filepath.Join(a.dataDir, "shards"), func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted meanwhile, or no shard stored yet
		}
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".part") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s's shards: %v", a.name, err)
	}
	return files
}

// fieldLines parses "Key: value" lines as printed for one object.
func fieldLines(out string) map[string]string {
	f := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			f[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return f
}

func distinct(s []string) map[string]bool {
	m := map[string]bool{}
	for _, v := range s {
		if v != "" {
			m[v] = true
		}
	}
	return m
}
