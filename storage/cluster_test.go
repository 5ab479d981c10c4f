package storage_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/storage/shardstore"
	"github.com/zrpcio/zrpc/testcluster"
)

// fastBlobs shortens the blob store's timers for tests.
func fastBlobs(c *node.Config) {
	c.BlobRepairInterval = 200 * time.Millisecond
	c.BlobRepairDelay = 500 * time.Millisecond
	c.BlobOrphanGrace = 500 * time.Millisecond
	c.BlobGCInterval = 200 * time.Millisecond
	c.BlobScrubRate = 0
}

// newBlobCluster starts n agents and waits until every agent's replica
// knows all n as alive, so that puts see the whole cluster.
func newBlobCluster(t testing.TB, n int, opts ...testcluster.Option) *testcluster.Cluster {
	t.Helper()
	c := testcluster.New(t, n, append([]testcluster.Option{testcluster.WithConfig(fastBlobs)}, opts...)...)
	waitAlive(t, c, n)
	return c
}

// waitAlive waits until every running agent's replica has want passing nodes.
func waitAlive(t testing.TB, c *testcluster.Cluster, want int) {
	t.Helper()
	for i := range c.Size() {
		nd := c.Node(i)
		if nd == nil {
			continue
		}
		c.WaitFor(20*time.Second, fmt.Sprintf("agent %d sees %d alive agents", i, want), func() bool {
			alive := 0
			for _, n := range nd.Store().FSM().Nodes() {
				if n.Health == pb.Health_PASSING {
					alive++
				}
			}
			return alive == want
		})
	}
}

func agentClient(t testing.TB, c *testcluster.Cluster, i int) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{Endpoints: []string{c.GRPCAddr(i)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n - n%8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func put(t testing.TB, cl *client.Client, name string, data []byte, opts client.PutOptions) *pb.BlobPutResponse {
	t.Helper()
	resp, err := cl.PutBlob(ctxFor(t, 2*time.Minute), name, bytes.NewReader(data), opts)
	if err != nil {
		t.Fatalf("put %s (%d bytes): %v", name, len(data), err)
	}
	return resp
}

func get(t testing.TB, cl *client.Client, name string, opts client.GetOptions) []byte {
	t.Helper()
	data, err := tryGet(t, cl, name, opts)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return data
}

func tryGet(t testing.TB, cl *client.Client, name string, opts client.GetOptions) ([]byte, error) {
	r, err := cl.GetBlob(ctxFor(t, 2*time.Minute), name, opts)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// slowFailover keeps repair (and the abort of a put whose agent seems
// failed) out of tests that move big blobs on a loaded machine, where an
// agent can miss gossip probes for a while.
var slowFailover = testcluster.WithConfig(func(c *node.Config) { c.BlobRepairDelay = time.Minute })

func TestBlobRoundTripSizes(t *testing.T) {
	c := newBlobCluster(t, 3, slowFailover)
	cl := agentClient(t, c, 1)
	sizes := []int{0, 1, 64<<10 - 1, 64 << 10, 64<<10 + 1, 1<<20 - 1, 1 << 20, 1<<20 + 1, 100 << 20}
	if testing.Short() {
		sizes = sizes[:len(sizes)-1]
	}
	for i, size := range sizes {
		name := fmt.Sprintf("sizes/%d", size)
		data := randomBytes(size, uint64(i))
		resp := put(t, cl, name, data, client.PutOptions{Size: int64(size)})
		b := resp.Blob
		if b.Size != uint64(size) {
			t.Errorf("%s: stored size %d", name, b.Size)
		}
		sum := sha256.Sum256(data)
		if !bytes.Equal(b.Sha256, sum[:]) {
			t.Errorf("%s: digest %x, want %x", name, b.Sha256, sum)
		}
		inline := size <= 64<<10
		if inline != (b.DataShards == 0) {
			t.Errorf("%s: %d+%d shards; want inline=%v", name, b.DataShards, b.ParityShards, inline)
		}
		if !inline && (b.DataShards != 2 || b.ParityShards != 1) {
			t.Errorf("%s: %d+%d on 3 agents, want the default 2+1", name, b.DataShards, b.ParityShards)
		}
		// Read it back through another agent, at the revision of the put.
		got := get(t, agentClient(t, c, 2), name, client.GetOptions{MinRevision: resp.Header.Revision})
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: read %d bytes that differ from the %d written", name, len(got), size)
		}
	}
}

func TestBlobRangedRead(t *testing.T) {
	c := newBlobCluster(t, 3, testcluster.WithConfig(func(c *node.Config) { c.BlobBlockSize = 64 << 10 }))
	cl := agentClient(t, c, 0)
	data := randomBytes(300<<10+17, 7)
	put(t, cl, "ranged", data, client.PutOptions{})
	for _, r := range []struct{ off, n uint64 }{{0, 1}, {1, 0}, {64 << 10, 64 << 10}, {100, 200 << 10}, {uint64(len(data)) - 5, 100}, {uint64(len(data)), 0}} {
		got := get(t, cl, "ranged", client.GetOptions{Offset: r.off, Length: r.n})
		end := uint64(len(data))
		if r.n > 0 && r.off+r.n < end {
			end = r.off + r.n
		}
		if !bytes.Equal(got, data[r.off:end]) {
			t.Errorf("range [%d, +%d): got %d bytes that differ from the %d expected", r.off, r.n, len(got), end-r.off)
		}
	}
	if _, err := tryGet(t, cl, "ranged", client.GetOptions{Offset: uint64(len(data)) + 1}); !errors.Is(err, apierr.ErrInvalidArgument) {
		t.Errorf("offset past the end: %v, want ErrInvalidArgument", err)
	}
}

// shardFiles returns how many shard files of blob id agent i holds.
func shardFiles(t testing.TB, c *testcluster.Cluster, i int, id string) int {
	n := 0
	c.Node(i).Blobs().Shards().Walk(func(s shardstore.ID, _ int64, _ time.Time) error {
		if id == "" || s.Blob == id {
			n++
		}
		return nil
	})
	return n
}

func TestBlobPlacementOnDistinctAgents(t *testing.T) {
	c := newBlobCluster(t, 5)
	cl := agentClient(t, c, 0)
	resp := put(t, cl, "placed", randomBytes(5<<20+3, 1), client.PutOptions{})
	b := c.Node(0).Store().FSM().Blob("placed")
	if b.DataShards != 3 || b.ParityShards != 2 {
		t.Fatalf("5 agents: %d+%d, want the default 3+2", b.DataShards, b.ParityShards)
	}
	if resp.MissingShards != 0 {
		t.Fatalf("%d shards missing with every agent up", resp.MissingShards)
	}
	perAgent := map[string]int{}
	for bi, blk := range b.Blocks {
		seen := map[uint32]bool{}
		for _, h := range blk.Holders {
			if h == 0 || seen[h] {
				t.Fatalf("block %d holders %v: want 5 distinct agents", bi, blk.Holders)
			}
			seen[h] = true
			perAgent[b.Nodes[h-1]]++
		}
	}
	for i := range c.Size() {
		if got, want := shardFiles(t, c, i, b.Id), perAgent[c.Name(i)]; got != want {
			t.Errorf("agent %s holds %d shard files, metadata says %d", c.Name(i), got, want)
		}
	}
}

func TestBlobReadWithParityAgentsKilled(t *testing.T) {
	c := newBlobCluster(t, 5)
	data := randomBytes(4<<20+11, 2)
	rev := put(t, agentClient(t, c, 0), "survivor", data, client.PutOptions{}).Header.Revision
	c.Node(1).Store().FSM().WaitRevision(ctxFor(t, 10*time.Second), rev)
	// Kill m = 2 agents, never the one we read from.
	c.Kill(3)
	c.Kill(4)
	got := get(t, agentClient(t, c, 1), "survivor", client.GetOptions{})
	if !bytes.Equal(got, data) {
		t.Fatal("read with 2 of 5 agents down returned different bytes")
	}
}

func TestBlobCorruptShardIsRepaired(t *testing.T) {
	c := newBlobCluster(t, 3)
	cl := agentClient(t, c, 0)
	data := randomBytes(3<<20, 3)
	rev := put(t, cl, "rot", data, client.PutOptions{}).Header.Revision
	b := c.Node(0).Store().FSM().Blob("rot")
	// Flip a bit in data shard 0 of block 1, on whichever agent holds it.
	holder := b.Nodes[b.Blocks[1].Holders[0]-1]
	idx := agentIndex(t, c, holder)
	id := shardstore.ID{Blob: b.Id, Block: 1, Index: 0}
	flipShard(t, c.Node(idx).Blobs().Shards(), id, 300)
	if err := c.Node(idx).Blobs().Shards().Verify(id); err == nil {
		t.Fatal("flipped shard still verifies")
	}
	reader := agentClient(t, c, 2)
	read := func() {
		t.Helper()
		if got := get(t, reader, "rot", client.GetOptions{MinRevision: rev}); !bytes.Equal(got, data) {
			t.Fatal("read with a corrupt shard returned different bytes")
		}
	}
	read()
	waitRereading(t, c, "repair rewrites the corrupt shard", read, func() bool {
		return c.Node(idx).Blobs().Shards().Verify(id) == nil
	})
	// The repair shows in repair status. The shard is durable before the
	// repair that wrote it counts it, and the count is the repairing
	// leader's: if leadership moved since, the leader now may have counted
	// nothing, so sum every agent's. A repair whose sync of the shard was
	// cut by the loss of leadership wrote the shard but counts as failed.
	c.WaitFor(20*time.Second, "the agents' repair status to count the repair", func() bool {
		return repairsCounted(c) > 0
	})
}

// waitRereading waits until cond holds, calling read (a read of a blob
// with a corrupt shard, which reports it to the leader) about once a
// second meanwhile. The leader keeps the reports it was sent in memory
// only: when leadership moves, the new leader learns of a corrupt shard
// from the next read that meets it (or from the scrubber, off in these
// tests).
func waitRereading(t testing.TB, c *testcluster.Cluster, what string, read func(), cond func() bool) {
	t.Helper()
	last := time.Now()
	c.WaitFor(30*time.Second, what, func() bool {
		if cond() {
			return true
		}
		if time.Since(last) > time.Second {
			read()
			last = time.Now()
		}
		return false
	})
}

// repairsCounted sums the shards the running agents' repair has rebuilt,
// or failed to, while each was leader.
func repairsCounted(c *testcluster.Cluster) uint64 {
	var n uint64
	for i := range c.Size() {
		if nd := c.Node(i); nd != nil {
			st := nd.Blobs().RepairStatus("")
			n += st.RebuiltShards + st.Failed
		}
	}
	return n
}

// TestBlobScrubberFindsBitRot: a corrupt shard nobody reads is found by the
// scrubber and rewritten.
func TestBlobScrubberFindsBitRot(t *testing.T) {
	c := newBlobCluster(t, 3)
	put(t, agentClient(t, c, 0), "cold", randomBytes(2<<20, 4), client.PutOptions{})
	b := c.Node(0).Store().FSM().Blob("cold")
	holder := b.Nodes[b.Blocks[0].Holders[2]-1]
	idx := agentIndex(t, c, holder)
	id := shardstore.ID{Blob: b.Id, Block: 0, Index: 2}
	flipShard(t, c.Node(idx).Blobs().Shards(), id, 40)
	if bad := c.Node(idx).Blobs().ScrubOnce(ctxFor(t, 10*time.Second), 0); bad != 1 {
		t.Fatalf("scrub found %d corrupt shards, want 1", bad)
	}
	c.WaitFor(20*time.Second, "repair rewrites the shard the scrubber found", func() bool {
		return c.Node(idx).Blobs().Shards().Verify(id) == nil
	})
}

func agentIndex(t testing.TB, c *testcluster.Cluster, name string) int {
	for i := range c.Size() {
		if c.Name(i) == name {
			return i
		}
	}
	t.Fatalf("no agent %s", name)
	return -1
}

// flipShard flips a bit of byte n of shard id's payload in its part file.
func flipShard(t testing.TB, s *shardstore.Store, id shardstore.ID, n int64) {
	t.Helper()
	off, err := s.PayloadOffset(id)
	if err != nil {
		t.Fatal(err)
	}
	flipBit(t, s.Path(id), off+n)
}

func flipBit(t testing.TB, path string, offset int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], offset); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b[:], offset); err != nil {
		t.Fatal(err)
	}
}

func TestBlobPutWhileAgentDownIsRepaired(t *testing.T) {
	// The down agent must still count in the cluster's size when the put
	// picks its k+m (3+2 for five agents): it is not reaped during the test.
	c := newBlobCluster(t, 5, testcluster.WithDeadNodeReap(time.Minute))
	victim := (c.LeaderIndex() + 1) % 5
	c.Kill(victim)
	waitAlive(t, c, 4)
	via := (victim + 1) % 5
	cl := agentClient(t, c, via)
	data := randomBytes(3<<20+5, 5)
	resp := put(t, cl, "degraded", data, client.PutOptions{})
	if resp.MissingShards == 0 {
		t.Fatalf("put of 3+2 with 4 agents alive reports no missing shards")
	}
	st, err := cl.StatBlob(ctxFor(t, 5*time.Second), "degraded")
	if err != nil || st.Health != "degraded" {
		t.Fatalf("stat: health %q, %v; want degraded", st.GetHealth(), err)
	}
	if got := get(t, cl, "degraded", client.GetOptions{}); !bytes.Equal(got, data) {
		t.Fatal("degraded blob reads back different bytes")
	}
	c.Restart(victim)
	waitAlive(t, c, 5)
	c.WaitFor(30*time.Second, "repair stores the missing shards on the returning agent", func() bool {
		st, err := cl.StatBlob(ctxFor(t, 5*time.Second), "degraded")
		return err == nil && st.Health == "healthy"
	})
	b := c.Node(via).Store().FSM().Blob("degraded")
	if got, want := shardFiles(t, c, victim, b.Id), len(b.Blocks); got != want {
		t.Errorf("returning agent holds %d shards, want one per block (%d)", got, want)
	}
}

// slowReader yields n bytes in small pieces, calling at after the first
// half has been read.
type slowReader struct {
	data []byte
	pos  int
	mid  func()
	once atomic.Bool
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.pos >= len(r.data) {
		return 0, io.EOF
	}
	if r.pos >= len(r.data)/2 && r.once.CompareAndSwap(false, true) {
		r.mid()
	}
	n := copy(p[:min(len(p), 256<<10)], r.data[r.pos:])
	r.pos += n
	return n, nil
}

func TestBlobAgentKilledMidPut(t *testing.T) {
	c := newBlobCluster(t, 3)
	coordinator := (c.LeaderIndex() + 1) % 3
	cl := agentClient(t, c, coordinator)
	r := &slowReader{data: randomBytes(8<<20, 6)}
	r.mid = func() {
		// Wait until some shards have landed on the other agents, then
		// crash the agent coordinating the put.
		c.WaitFor(20*time.Second, "shards reach the other agents", func() bool {
			for i := range 3 {
				if _, n := c.Node(i).Blobs().Shards().Usage(); i != coordinator && n > 0 {
					return true
				}
			}
			return false
		})
		c.Kill(coordinator)
	}
	// Through the agent: the coordinated put is the one an agent leads.
	_, err := cl.PutBlob(ctxFor(t, time.Minute), "interrupted", r, client.PutOptions{ThroughAgent: true})
	if err == nil {
		t.Fatal("put succeeded although its agent was killed")
	}
	other := (coordinator + 1) % 3
	c.WaitFor(20*time.Second, "the leader aborts the dead agent's put", func() bool {
		return len(c.Node(other).Store().FSM().PendingBlobs()) == 0
	})
	if b := c.Node(other).Store().FSM().Blob("interrupted"); b != nil {
		t.Fatalf("interrupted put is visible: %v", b)
	}
	for i := range 3 {
		if i == coordinator {
			continue
		}
		c.WaitFor(20*time.Second, fmt.Sprintf("agent %d collects the orphan shards", i), func() bool {
			_, n := c.Node(i).Blobs().Shards().Usage() // staged shards count too
			return n == 0
		})
	}
}

func TestBlobDeleteRemovesEveryShard(t *testing.T) {
	c := newBlobCluster(t, 3)
	cl := agentClient(t, c, 0)
	put(t, cl, "doomed", randomBytes(3<<20, 8), client.PutOptions{})
	if resp, err := cl.DeleteBlob(ctxFor(t, 5*time.Second), "doomed"); err != nil || resp.Header.GetRevision() == 0 {
		t.Fatalf("delete: %v, revision %d", err, resp.GetHeader().GetRevision())
	}
	for i := range 3 {
		c.WaitFor(10*time.Second, fmt.Sprintf("agent %d deletes its shards", i), func() bool {
			return shardFiles(t, c, i, "") == 0
		})
	}
	if _, err := tryGet(t, cl, "doomed", client.GetOptions{}); !errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("get after delete: %v, want ErrNotFound", err)
	}
	if _, err := cl.DeleteBlob(ctxFor(t, 5*time.Second), "doomed"); !errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
}

func TestBlobOverwriteAndBadInput(t *testing.T) {
	c := newBlobCluster(t, 3)
	cl := agentClient(t, c, 0)
	ctx := ctxFor(t, time.Minute)
	put(t, cl, "cfg/app.yaml", randomBytes(2<<20, 9), client.PutOptions{})
	old := c.Node(0).Store().FSM().Blob("cfg/app.yaml")
	_, err := cl.PutBlob(ctx, "cfg/app.yaml", bytes.NewReader([]byte("x")), client.PutOptions{})
	if !errors.Is(err, apierr.ErrAlreadyExists) {
		t.Fatalf("put over an existing name: %v, want ErrAlreadyExists", err)
	}
	data := randomBytes(1<<20+1, 10)
	put(t, cl, "cfg/app.yaml", data, client.PutOptions{Overwrite: true})
	if got := get(t, cl, "cfg/app.yaml", client.GetOptions{}); !bytes.Equal(got, data) {
		t.Fatal("overwritten blob reads back the old bytes")
	}
	for i := range 3 {
		c.WaitFor(10*time.Second, "old version's shards collected", func() bool { return shardFiles(t, c, i, old.Id) == 0 })
	}

	for _, name := range []string{"", "../etc/passwd", "a//b", "/abs", "trailing/", "sp ace", "a/./b", string(make([]byte, 1025))} {
		if _, err := cl.PutBlob(ctx, name, bytes.NewReader([]byte("x")), client.PutOptions{}); !errors.Is(err, apierr.ErrInvalidArgument) {
			t.Errorf("put %q: %v, want ErrInvalidArgument", name, err)
		}
	}
	big := randomBytes(200<<10, 11)
	if _, err := cl.PutBlob(ctx, "wide", bytes.NewReader(big), client.PutOptions{Data: 3, Parity: 2}); !errors.Is(err, apierr.ErrNotEnoughShards) {
		t.Errorf("3+2 on 3 agents: %v, want ErrNotEnoughShards", err)
	}
	if _, err := cl.PutBlob(ctx, "zero", bytes.NewReader(big), client.PutOptions{Data: 0, Parity: 1}); !errors.Is(err, apierr.ErrInvalidArgument) {
		t.Errorf("0+1: %v, want ErrInvalidArgument", err)
	}
	resp, err := cl.PutBlob(ctx, "wide", bytes.NewReader(big), client.PutOptions{Data: 2, Parity: 2, BestEffort: true})
	if err != nil || resp.MissingShards == 0 {
		t.Errorf("2+2 best effort on 3 agents: %v, missing %d; want success with missing shards", err, resp.GetMissingShards())
	}
	if _, err := cl.PutBlob(ctx, "short", bytes.NewReader(big), client.PutOptions{Size: int64(len(big)) + 1}); !errors.Is(err, apierr.ErrInvalidArgument) {
		t.Errorf("stream shorter than its declared size: %v, want ErrInvalidArgument", err)
	}
	if b := c.Node(0).Store().FSM().Blob("short"); b != nil {
		t.Error("a put with the wrong size is visible")
	}
}

// TestBlobLargeRoundTripBoundedMemory streams 256 MiB in and out and checks
// the heap never grows by more than a fraction of that.
func TestBlobLargeRoundTripBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("256 MiB round trip")
	}
	c := newBlobCluster(t, 3, slowFailover)
	cl := agentClient(t, c, 1)
	const size = 256 << 20
	// Collect often, and sample the live heap the collector marked, so
	// that garbage awaiting collection does not count as memory in use.
	defer debug.SetGCPercent(debug.SetGCPercent(20))
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	runtime.GC()
	metrics.Read(live)
	base := live[0].Value.Uint64()
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
		}
	}()
	src := io.LimitReader(newPattern(42), size)
	want := sha256.New()
	if _, err := cl.PutBlob(ctxFor(t, 5*time.Minute), "big", io.TeeReader(src, want), client.PutOptions{Size: size}); err != nil {
		t.Fatal(err)
	}
	r, err := cl.GetBlob(ctxFor(t, 5*time.Minute), "big", client.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, r)
	r.Close()
	close(stop)
	<-done
	if err != nil || n != size {
		t.Fatalf("read %d bytes, %v", n, err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("256 MiB blob reads back different bytes")
	}
	growth := int64(peak.Load()) - int64(base)
	t.Logf("live heap: %d MiB before, peak %d MiB (growth %d MiB for a %d MiB blob)",
		base>>20, peak.Load()>>20, growth>>20, size>>20)
	if growth > size/4 {
		t.Fatalf("heap grew by %d MiB moving a %d MiB blob: memory is not bounded", growth>>20, size>>20)
	}
}

// pattern is an endless deterministic byte stream: a random cycle whose
// length is not a multiple of the block size, so no two blocks are alike.
type pattern struct {
	cycle []byte
	pos   int
}

func newPattern(seed uint64) *pattern { return &pattern{cycle: randomBytes(1<<20+7, seed)} }

func (p *pattern) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		c := copy(b[n:], p.cycle[p.pos:])
		n += c
		p.pos = (p.pos + c) % len(p.cycle)
	}
	return n, nil
}

// TestBlobReadThroughRestartedAgent: an agent that has just restarted
// replays its Raft log only once the leader tells it what is committed;
// until then its replica misses blobs, and it must catch up rather than
// answer "not found".
func TestBlobReadThroughRestartedAgent(t *testing.T) {
	c := newBlobCluster(t, 3)
	data := randomBytes(2<<20, 12)
	put(t, agentClient(t, c, 0), "kept", data, client.PutOptions{})
	restarted := (c.LeaderIndex() + 1) % 3
	c.Restart(restarted)
	if got := get(t, agentClient(t, c, restarted), "kept", client.GetOptions{}); !bytes.Equal(got, data) {
		t.Fatal("restarted agent reads back different bytes")
	}
}

// TestBlobPlacementSpreadsZones: 6 agents in 3 zones, 4+2: no zone may
// hold more than m = 2 shards of a block, so a whole zone can be lost.
func TestBlobPlacementSpreadsZones(t *testing.T) {
	zoneOf := map[string]string{"n1": "z1", "n2": "z1", "n3": "z2", "n4": "z2", "n5": "z3", "n6": "z3"}
	c := newBlobCluster(t, 6, testcluster.WithConfig(func(c *node.Config) { c.Zone = zoneOf[c.Name] }))
	resp := put(t, agentClient(t, c, 0), "zoned", randomBytes(8<<20, 13), client.PutOptions{})
	b := c.Node(0).Store().FSM().Blob("zoned")
	if b.DataShards != 4 || b.ParityShards != 2 || resp.MissingShards != 0 {
		t.Fatalf("6 agents: %d+%d with %d missing, want 4+2 and none", b.DataShards, b.ParityShards, resp.MissingShards)
	}
	for bi, blk := range b.Blocks {
		perZone := map[string]int{}
		for _, h := range blk.Holders {
			perZone[zoneOf[b.Nodes[h-1]]]++
		}
		for z, n := range perZone {
			if n > 2 {
				t.Errorf("block %d puts %d shards in zone %s, at most 2 allowed: %v", bi, n, z, perZone)
			}
		}
	}
}

// TestBlobCorruptWithoutParity: a 1+0 blob with a rotten shard cannot be
// read or repaired; the get fails (never returns the bad bytes) and stat
// shows the shard corrupt and the blob unreadable.
func TestBlobCorruptWithoutParity(t *testing.T) {
	c := newBlobCluster(t, 3)
	cl := agentClient(t, c, 0)
	rev := put(t, cl, "fragile", randomBytes(1<<20+100, 14), client.PutOptions{Data: 1}).Header.Revision
	b := c.Node(0).Store().FSM().Blob("fragile")
	idx := agentIndex(t, c, b.Nodes[b.Blocks[0].Holders[0]-1])
	flipShard(t, c.Node(idx).Blobs().Shards(), shardstore.ID{Blob: b.Id, Block: 0, Index: 0}, 300)
	read := func() {
		t.Helper()
		if _, err := tryGet(t, cl, "fragile", client.GetOptions{MinRevision: rev}); !errors.Is(err, apierr.ErrNotEnoughShards) {
			t.Fatalf("get of a 1+0 blob with a corrupt shard: %v, want ErrNotEnoughShards", err)
		}
	}
	read()
	waitRereading(t, c, "stat shows the shard corrupt", read, func() bool {
		st, err := cl.StatBlob(ctxFor(t, 5*time.Second), "fragile")
		if err != nil || st.Health != "unreadable" {
			return false
		}
		for _, s := range st.Shards {
			if s.Block == 0 && s.Index == 0 {
				return s.State == "corrupt"
			}
		}
		return false
	})
}

// TestBlobShardsOfFailedAgentRebuiltElsewhere: 4 agents, 2+1; an agent
// holding shards dies and stays dead past the repair delay; its shards are
// rebuilt on the agent that held none of their block, and the blob is
// healthy again with the agent still down.
func TestBlobShardsOfFailedAgentRebuiltElsewhere(t *testing.T) {
	c := newBlobCluster(t, 4)
	leader := c.LeaderIndex()
	via := (leader + 1) % 4
	cl := agentClient(t, c, via)
	data := randomBytes(6<<20+9, 15)
	put(t, cl, "moved", data, client.PutOptions{})
	victim := -1
	for i := range 4 {
		if i != leader && i != via && shardFiles(t, c, i, "") > 0 {
			victim = i
			break
		}
	}
	if victim < 0 {
		t.Fatal("no agent other than the leader and the client's holds shards")
	}
	c.Kill(victim)
	c.WaitFor(30*time.Second, "blob healthy again without the dead agent", func() bool {
		st, err := cl.StatBlob(ctxFor(t, 5*time.Second), "moved")
		if err != nil || st.Health != "healthy" {
			return false
		}
		for _, s := range st.Shards {
			if s.Node == c.Name(victim) {
				return false
			}
		}
		return true
	})
	if got := get(t, cl, "moved", client.GetOptions{}); !bytes.Equal(got, data) {
		t.Fatal("blob reads back different bytes after repair")
	}
}
