package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// stripeCluster starts three agents with 64 KiB blocks, the shortest put
// lease, and a leader that looks for stale puts five times a second. Agent
// i keeps its data in dataDir/<its name>.
func stripeCluster(t *testing.T) (cl *testcluster.Cluster, dataDir string) {
	dataDir = t.TempDir()
	return testcluster.New(t, 3, testcluster.WithConfig(func(c *node.Config) {
		c.DataDir = filepath.Join(dataDir, c.Name)
		c.BlobBlockSize = 64 << 10
		c.BlobPutLease = time.Second
		c.BlobRepairInterval = 200 * time.Millisecond
	})), dataDir
}

// countWriteShards counts the WriteShards streams a client opens.
func countWriteShards(n *atomic.Int64) grpc.DialOption {
	return grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
		streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if method == zrpcpb.Blobs_WriteShards_FullMethodName {
			n.Add(1)
		}
		return streamer(ctx, desc, cc, method, opts...)
	})
}

func clusterClient(t *testing.T, endpoints []string, opts ...grpc.DialOption) *Client {
	t.Helper()
	c, err := New(Config{Endpoints: endpoints, DialTimeout: time.Second, Logger: testLogger(t), dialOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readBlob reads the whole blob name back through GetBlob, which checks
// its SHA-256.
func readBlob(t *testing.T, c *Client, name string, rev uint64) []byte {
	t.Helper()
	r, err := c.GetBlob(testContext(t), name, GetOptions{MinRevision: rev})
	if err != nil {
		t.Fatalf("GetBlob %s: %v", name, err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read blob %s: %v", name, err)
	}
	return got
}

func TestStripedPutOnAClusterReadsBackIdentical(t *testing.T) {
	cl, _ := stripeCluster(t)
	var streams atomic.Int64
	c := clusterClient(t, []string{cl.GRPCAddr(1)}, countWriteShards(&streams))
	for _, tc := range []struct {
		name string
		size int
		give bool
	}{
		{"known-size", 5*64<<10 + 1000, true},
		{"unknown-size", 3*64<<10 + 7, false},
	} {
		data := randomBytes(t, tc.size)
		opts := PutOptions{}
		if tc.give {
			opts.Size = int64(len(data))
		}
		before := streams.Load()
		resp, err := c.PutBlob(testContext(t), tc.name, bytes.NewReader(data), opts)
		if err != nil {
			t.Fatalf("PutBlob %s: %v", tc.name, err)
		}
		if n := streams.Load() - before; n != 3 {
			t.Fatalf("put %s opened %d WriteShards streams, want 3 (one per shard of 2+1)", tc.name, n)
		}
		if resp.GetBlob().GetSize() != uint64(len(data)) || resp.GetMissingShards() != 0 {
			t.Fatalf("put %s answered %v, want %d bytes and no missing shard", tc.name, resp, len(data))
		}
		if got := readBlob(t, c, tc.name, resp.GetHeader().GetRevision()); !bytes.Equal(got, data) {
			t.Fatalf("blob %s read back differs from what was put (%d bytes, want %d)", tc.name, len(got), len(data))
		}
	}
}

func TestStripedPutWithAnAgentStoppedStoresTheRestForRepair(t *testing.T) {
	cl, _ := stripeCluster(t)
	down := (cl.LeaderIndex() + 1) % 3
	var up []string
	for i := range 3 {
		if i != down {
			up = append(up, cl.GRPCAddr(i))
		}
	}
	cl.Stop(down)
	c := clusterClient(t, up)
	data := randomBytes(t, 4*64<<10+5)
	// 1+2 on three agents, one of them down: every block keeps 2 shards,
	// the k+1 a put needs.
	resp, err := c.PutBlob(testContext(t), "degraded", bytes.NewReader(data), PutOptions{Data: 1, Parity: 2, BestEffort: true, Size: int64(len(data))})
	if err != nil {
		t.Fatalf("PutBlob: %v", err)
	}
	if resp.GetMissingShards() != 5 {
		t.Fatalf("put answered %d missing shards, want 5 (the stopped agent's shard of each block)", resp.GetMissingShards())
	}
	if got := readBlob(t, c, "degraded", resp.GetHeader().GetRevision()); !bytes.Equal(got, data) {
		t.Fatal("blob read back differs from what was put")
	}
}

// killedPutEnv, when set, makes TestStripedPutChildKilledMidPut the putting
// client of TestClientKilledMidPutLeavesNoBlobAndNoShards: the endpoints to
// put through.
const killedPutEnv = "ZRPC_TEST_KILLED_PUT_ENDPOINTS"

// TestStripedPutChildKilledMidPut is the child process of
// TestClientKilledMidPutLeavesNoBlobAndNoShards: it puts a blob whose
// reader gives two blocks and then nothing, until the parent kills it.
func TestStripedPutChildKilledMidPut(t *testing.T) {
	endpoints := os.Getenv(killedPutEnv)
	if endpoints == "" {
		t.Skip("the child process of TestClientKilledMidPutLeavesNoBlobAndNoShards")
	}
	c, err := New(Config{Endpoints: strings.Split(endpoints, ",")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := io.MultiReader(bytes.NewReader(make([]byte, 2*64<<10)), stalled{})
	_, err = c.PutBlob(context.Background(), "killed", r, PutOptions{Size: 64 << 20})
	t.Fatalf("PutBlob returned (%v) before the parent killed this process", err)
}

// stalled is a reader that never returns.
type stalled struct{}

func (stalled) Read([]byte) (int, error) { select {} }

func TestClientKilledMidPutLeavesNoBlobAndNoShards(t *testing.T) {
	cl, dataDir := stripeCluster(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestStripedPutChildKilledMidPut$", "-test.count=1")
	cmd.Env = append(os.Environ(), killedPutEnv+"="+cl.GRPCAddr(0)+","+cl.GRPCAddr(1))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	// The put is pending, and every agent has staged shards of it.
	var id string
	cl.WaitFor(60*time.Second, "the child's put pending with shards staged on every agent", func() bool {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("child exited before it was killed (%v):\n%s", err, out.String())
		default:
		}
		l := cl.Leader()
		if l == nil {
			return false
		}
		for _, p := range l.Store().FSM().PendingBlobs() {
			if p.Name == "killed" {
				id = p.Id
			}
		}
		if id == "" {
			return false
		}
		for i := range 3 {
			if len(filesOfBlob(filepath.Join(dataDir, cl.Name(i)), id)) == 0 {
				return false
			}
		}
		return true
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	exited <- nil // for the cleanup

	cl.WaitFor(60*time.Second, "the leader to abort the put and the agents to drop its shards", func() bool {
		l := cl.Leader()
		if l == nil || l.Store().FSM().PendingBlob(id) != nil {
			return false
		}
		for i := range 3 {
			if len(filesOfBlob(filepath.Join(dataDir, cl.Name(i)), id)) > 0 {
				return false
			}
		}
		return true
	})
	c := clusterClient(t, []string{cl.GRPCAddr(2)})
	if _, err := c.StatBlob(testContext(t), "killed"); !errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("StatBlob of the killed put: %v, want ErrNotFound", err)
	}
}

// filesOfBlob lists the files (part files, staged or not) the agent whose
// data dir is dir keeps for the blob id.
func filesOfBlob(dir, id string) []string {
	var files []string
	root := filepath.Join(dir, "shards")
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(path, id) {
			files = append(files, path)
		}
		return nil
	})
	return files
}
