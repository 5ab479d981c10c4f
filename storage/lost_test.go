package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/storage"
	"github.com/zrpcio/zrpc/storage/shardstore"
	"github.com/zrpcio/zrpc/testcluster"
)

// holderIndex returns the index of the agent holding shard (block, idx) of
// the blob called name, as agent 0's replica sees it.
func holderIndex(t testing.TB, c *testcluster.Cluster, name string, block, idx int) (int, *pb.Blob) {
	t.Helper()
	b := c.Node(0).Store().FSM().Blob(name)
	if b == nil {
		t.Fatalf("no blob %s", name)
	}
	return agentIndex(t, c, b.Holder(b.Blocks[block], idx)), b
}

func statHealth(t testing.TB, cl *client.Client, name string) (string, map[[2]uint32]string) {
	st, err := cl.StatBlob(ctxFor(t, 5*time.Second), name)
	if err != nil {
		return "", nil
	}
	states := make(map[[2]uint32]string)
	for _, s := range st.Shards {
		states[[2]uint32{s.Block, s.Index}] = s.State
	}
	return st.Health, states
}

// TestBlobLostShardOnAliveAgentIsRebuilt: shard files deleted on running
// agents are found (one by a read, one by the scrubber), rebuilt on their
// agents by repair, and the blob is healthy again.
func TestBlobLostShardOnAliveAgentIsRebuilt(t *testing.T) {
	c := newBlobCluster(t, 3)
	cl := agentClient(t, c, 0)
	data := randomBytes(2<<20+5, 31)
	rev := put(t, cl, "lost", data, client.PutOptions{}).Header.Revision
	c.Node(0).Store().FSM().WaitRevision(ctxFor(t, 10*time.Second), rev)
	// Data shard 0 of block 0: a full read touches it. Parity shard 2 of
	// block 1: no read does, only the scrubber.
	readHolder, b := holderIndex(t, c, "lost", 0, 0)
	scrubHolder, _ := holderIndex(t, c, "lost", 1, 2)
	readID := shardstore.ID{Blob: b.Id, Block: 0, Index: 0}
	scrubID := shardstore.ID{Blob: b.Id, Block: 1, Index: 2}
	lost := []struct {
		agent int
		id    shardstore.ID
	}{{readHolder, readID}, {scrubHolder, scrubID}}
	for _, l := range lost {
		if err := c.Node(l.agent).Blobs().Shards().Delete(l.id); err != nil {
			t.Fatal(err)
		}
	}
	if got := get(t, cl, "lost", client.GetOptions{}); !bytes.Equal(got, data) {
		t.Fatal("read with a lost shard returned different bytes")
	}
	if n := c.Node(scrubHolder).Blobs().ScrubOnce(ctxFor(t, 10*time.Second), 0); n < 1 {
		t.Fatalf("scrub of agent %d reported %d bad shards; its shard %v is missing", scrubHolder, n, scrubID)
	}
	for _, l := range lost {
		c.WaitFor(30*time.Second, fmt.Sprintf("repair rewrites shard %v on agent %d", l.id, l.agent), func() bool {
			return c.Node(l.agent).Blobs().Shards().Verify(l.id) == nil
		})
	}
	c.WaitFor(10*time.Second, "stat says healthy", func() bool {
		h, _ := statHealth(t, cl, "lost")
		return h == "healthy"
	})
}

// TestBlobLostShardWithoutParityShowsInStat: a 1+0 blob whose only shard
// file is gone cannot be read or rebuilt; stat and the listing must say
// so rather than call it healthy.
func TestBlobLostShardWithoutParityShowsInStat(t *testing.T) {
	c := newBlobCluster(t, 3)
	cl := agentClient(t, c, 0)
	put(t, cl, "gone", randomBytes(1<<20+100, 32), client.PutOptions{Data: 1})
	put(t, cl, "kept", randomBytes(1<<20+100, 33), client.PutOptions{Data: 1})
	holder, b := holderIndex(t, c, "gone", 0, 0)
	id := shardstore.ID{Blob: b.Id, Block: 0, Index: 0}
	if err := c.Node(holder).Blobs().Shards().Delete(id); err != nil {
		t.Fatal(err)
	}
	if n := c.Node(holder).Blobs().ScrubOnce(ctxFor(t, 10*time.Second), 0); n != 1 {
		t.Fatalf("scrub reported %d bad shards, want the 1 lost", n)
	}
	c.WaitFor(10*time.Second, "stat shows the lost shard and the blob unreadable", func() bool {
		h, states := statHealth(t, cl, "gone")
		return h == "unreadable" && states[[2]uint32{0, 0}] == "lost"
	})
	for i := range 3 { // every agent's listing asks the leader
		list, err := agentClient(t, c, i).ListBlobs(ctxFor(t, 5*time.Second), "")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 || list[0].Name != "gone" || list[0].Health != "unreadable" || list[1].Name != "kept" || list[1].Health != "healthy" {
			t.Fatalf("blob list through %s: %v, want gone unreadable, as stat says, and kept healthy", c.Name(i), list)
		}
	}
	many := &pb.RepairStatusRequest{BlobIds: make([]string, storage.MaxRepairStatusBlobs+1)}
	if _, err := c.Node(0).Blobs().LeaderRepairStatusOf(ctxFor(t, 5*time.Second), many); !errors.Is(err, apierr.ErrInvalidArgument) {
		t.Fatalf("repair status of %d blobs at once: %v, want InvalidArgument", len(many.BlobIds), err)
	}
}

// TestBlobReplacedDiskIsRefilled: an agent holding data shards crashes
// and comes back on an empty shard directory (its disk was replaced; same
// name, same Raft state); it gets every shard the metadata places on it
// back (reported at its start, and by the reads that meet them), and
// reads of the blob through the other agents, striped and through an
// agent, never fail meanwhile.
func TestBlobReplacedDiskIsRefilled(t *testing.T) {
	c := newBlobCluster(t, 3, slowFailover)
	cl := agentClient(t, c, 0)
	data := randomBytes(3<<20, 33)
	rev := put(t, cl, "refill", data, client.PutOptions{}).Header.Revision
	victim, b := holderIndex(t, c, "refill", 0, 0)
	for i := range 3 {
		c.Node(i).Store().FSM().WaitRevision(ctxFor(t, 10*time.Second), rev)
	}
	want := shardFiles(t, c, victim, b.Id)
	watchRecordedShards(t, c, "refill", c.Name(victim)) // until its disk is refilled
	reads := readContinuously(t, c, "refill", data, victim)
	dir := filepath.Dir(filepath.Dir(filepath.Dir(c.Node(victim).Blobs().Shards().Path(shardstore.ID{Blob: b.Id}))))
	c.Kill(victim)
	reads.waitOne(c, "a read with the victim down")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	c.Restart(victim)
	reads.waitOne(c, "a read with the victim back on an empty disk")
	c.WaitFor(30*time.Second, "repair refills the replaced disk", func() bool {
		return shardFiles(t, c, victim, b.Id) == want
	})
	waitShardsHeld(t, c, "refill", "every shard on its holder again")
	watchRecordedShards(t, c, "refill")
	c.WaitFor(10*time.Second, "stat says healthy", func() bool {
		h, _ := statHealth(t, cl, "refill")
		return h == "healthy"
	})
	reads.waitOne(c, "a read after the refill")
	waitCollected(t, c, plantOrphans(t, c, 44))
}

// TestBlobReplacedDiskOfParityShardsIsRefilledAtStart: the agent holding
// a blob's parity shards, which reads never touch, comes back on an
// empty disk. Its scrubber's first pass is an hour away; the agent
// reports what its disk lacks when it starts, and repair refills it
// while reads go on without a failure.
func TestBlobReplacedDiskOfParityShardsIsRefilledAtStart(t *testing.T) {
	c := newBlobCluster(t, 3, slowFailover, testcluster.WithConfig(func(c *node.Config) {
		c.BlobScrubRate = 8 << 20
		c.BlobScrubInterval = time.Hour
	}))
	cl := agentClient(t, c, 0)
	data := randomBytes(3<<20, 35)
	rev := put(t, cl, "parity", data, client.PutOptions{}).Header.Revision
	victim, b := holderIndex(t, c, "parity", 0, 2)
	for i := range 3 {
		c.Node(i).Store().FSM().WaitRevision(ctxFor(t, 10*time.Second), rev)
	}
	want := shardFiles(t, c, victim, b.Id)
	watchRecordedShards(t, c, "parity", c.Name(victim)) // until its disk is refilled
	reads := readContinuously(t, c, "parity", data, victim)
	dir := filepath.Dir(filepath.Dir(filepath.Dir(c.Node(victim).Blobs().Shards().Path(shardstore.ID{Blob: b.Id}))))
	c.Kill(victim)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	c.Restart(victim)
	c.WaitFor(30*time.Second, "repair refills the replaced disk", func() bool {
		return shardFiles(t, c, victim, b.Id) == want
	})
	waitShardsHeld(t, c, "parity", "every shard on its holder again")
	watchRecordedShards(t, c, "parity")
	reads.waitOne(c, "a read after the refill")
}

// readContinuously reads the blob called name whole, over and over until
// the test ends, through the agents other than skip in turn, alternately
// striped and through the agent, failing the test on any error or wrong
// byte.
func readContinuously(t *testing.T, c *testcluster.Cluster, name string, data []byte, skip int) *readLoop {
	var clients []*client.Client
	for i := range c.Size() {
		if i != skip {
			clients = append(clients, agentClient(t, c, i))
		}
	}
	r := &readLoop{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := 0; ctx.Err() == nil; n++ {
			opts := client.GetOptions{ThroughAgent: n%2 == 1}
			got, err := readAll(ctx, clients[n/2%len(clients)], name, opts)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				t.Errorf("read %d of %s (through the agent: %v): %v", n, name, opts.ThroughAgent, err)
				return
			case !bytes.Equal(got, data):
				t.Errorf("read %d of %s (through the agent: %v): different bytes", n, name, opts.ThroughAgent)
				return
			}
			r.reads.Add(1)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return r
}

func readAll(ctx context.Context, cl *client.Client, name string, opts client.GetOptions) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	r, err := cl.GetBlob(ctx, name, opts)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// readLoop counts readContinuously's good reads.
type readLoop struct{ reads atomic.Int64 }

// waitOne waits until a read started after the call has succeeded.
func (r *readLoop) waitOne(c *testcluster.Cluster, what string) {
	from := r.reads.Load() + 1 // the read in progress may have started before
	c.WaitFor(30*time.Second, what, func() bool { return r.reads.Load() > from })
}

// TestBlobOrphanCopyIsNotTheShard: a corrupt copy of a shard on an agent
// the metadata does not place it on (an orphan, e.g. left behind when
// repair moved the shard) is not the shard: the scrubber does not report
// it, and a report naming that agent does not make stat call the holder's
// good copy corrupt.
func TestBlobOrphanCopyIsNotTheShard(t *testing.T) {
	c := newBlobCluster(t, 3, slowFailover)
	cl := agentClient(t, c, 0)
	rev := put(t, cl, "copies", randomBytes(1<<20+10, 34), client.PutOptions{}).Header.Revision
	c.Node(0).Store().FSM().WaitRevision(ctxFor(t, 10*time.Second), rev)
	holder, b := holderIndex(t, c, "copies", 0, 0)
	other := (holder + 1) % 3
	for i := range 3 {
		c.Node(i).Store().FSM().WaitRevision(ctxFor(t, 10*time.Second), rev)
	}
	id := shardstore.ID{Blob: b.Id, Block: 0, Index: 0}
	raw, err := os.ReadFile(c.Node(holder).Blobs().Shards().Path(id))
	if err != nil {
		t.Fatal(err)
	}
	orphan := c.Node(other).Blobs().Shards().Path(id)
	if err := os.WriteFile(orphan, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	flipBit(t, orphan, 300)
	if n := c.Node(other).Blobs().ScrubOnce(ctxFor(t, 10*time.Second), 0); n != 0 {
		t.Fatalf("scrub reported %d bad shards; the only bad file is an orphan copy", n)
	}
	leader := c.LeaderIndex()
	ref := &pb.ShardRef{BlobId: b.Id, Block: 0, Index: 0, Node: c.Name(other)}
	if _, err := agentShards(c, other, leader).ReportShards(ctxFor(t, 5*time.Second),
		&pb.ReportShardsRequest{Corrupt: []*pb.ShardRef{ref}, Reporter: c.Name(other)}); err != nil {
		t.Fatal(err)
	}
	h, states := statHealth(t, cl, "copies")
	if h != "healthy" || states[[2]uint32{0, 0}] != "ok" {
		t.Fatalf("stat after a report about the orphan copy: %s, shard 0/0 %s; want healthy and ok", h, states[[2]uint32{0, 0}])
	}
}

// TestBlobStatOnAnAgentCutOffFromTheQuorumSaysUnreadable: agent 0 is cut
// off from the two others, which hold two of each block's three shards.
// No leader on its side can record their failure, so its replica goes on
// calling them passing; its stat and ls must still say the blob cannot be
// read (from where it stands), the shards on the unreachable agents
// node-failed, once its gossip has declared them dead, and healthy again
// once the partition heals.
func TestBlobStatOnAnAgentCutOffFromTheQuorumSaysUnreadable(t *testing.T) {
	c := newBlobCluster(t, 3, slowFailover, testcluster.WithDeadNodeReap(time.Minute))
	cl := agentClient(t, c, 0)
	put(t, cl, "stranded", randomBytes(2<<20, 34), client.PutOptions{Data: 2, Parity: 1})
	c.Partition([]int{0}, []int{1, 2})
	unreachable := map[string]bool{c.Name(1): true, c.Name(2): true}
	var last string
	defer func() { t.Logf("last stat: %s", last) }()
	c.WaitFor(45*time.Second, "stat on the cut-off agent says unreadable with the others' shards node-failed", func() bool {
		st, err := cl.StatBlob(ctxFor(t, 5*time.Second), "stranded")
		if err != nil {
			last = err.Error()
			return false
		}
		last = fmt.Sprintf("health %s, shards %v", st.Health, st.Shards)
		if st.Health != "unreadable" {
			return false
		}
		for _, s := range st.Shards {
			if unreachable[s.Node] != (s.State == "node-failed") {
				return false
			}
		}
		return true
	})
	list, err := cl.ListBlobs(ctxFor(t, 5*time.Second), "stranded", client.WithConsistency(pb.Consistency_STALE))
	if err != nil || len(list) != 1 || list[0].Health != "unreadable" {
		t.Fatalf("stale ls on the cut-off agent = %v (%v), want stranded unreadable", list, err)
	}
	c.Heal()
	c.WaitFor(45*time.Second, "stat on the agent says healthy once the partition heals", func() bool {
		h, _ := statHealth(t, cl, "stranded")
		return h == "healthy"
	})
}

// TestRepairStopsTryingAnAgentWithNoSpace: the one agent lost shards can
// go to has room for one block's shard when it joins (so it does not say
// it is full) and takes the first rebuilt shard; the second finds no
// space. Repair learns that, and then waits instead of trying the agent
// again at every scan (each try failing and warning once per lost
// shard); it counts the shard as waiting for an agent.
func TestRepairStopsTryingAnAgentWithNoSpace(t *testing.T) {
	c := newBlobCluster(t, 3)
	leader := c.LeaderIndex()
	put(t, agentClient(t, c, leader), "cramped", randomBytes(2<<20, 35), client.PutOptions{Data: 2, Parity: 1})
	// The fourth agent joins after the put: room for one 512 KiB shard of
	// the blob's two 1 MiB blocks, not two.
	full := c.Add(testcluster.WithConfig(fastBlobs), testcluster.WithConfig(func(cfg *node.Config) {
		cfg.ShardMaxBytes = int64(cfg.BlobBlockSize)
	}))
	waitAlive(t, c, 4)
	victim := (leader + 1) % 3
	c.Kill(victim)

	status := func() *pb.RepairStatusResponse { return c.Node(leader).Blobs().RepairStatus("") }
	c.WaitFor(20*time.Second, "repair to try the full agent, find it full and wait", func() bool {
		st := status()
		return st.Failed > 0 && st.Waiting > 0 && st.InProgress == 0
	})
	failed := status().Failed
	if failed > 2 { // the lost shard of each block, once
		t.Errorf("repair tried the full agent %d times before waiting, want at most once per lost shard", failed)
	}
	if !strings.Contains(status().LastError, "no space") {
		t.Errorf("repair's last error %q does not say %s has no space", status().LastError, c.Name(full))
	}
	// Ten scans (repair interval 200 ms) later, it was not tried again.
	time.Sleep(10 * 200 * time.Millisecond)
	if st := status(); st.Failed != failed || st.Waiting == 0 {
		t.Fatalf("after ten scans repair failed %d more times (waiting %d); want it to wait for room, not retry %s", st.Failed-failed, st.Waiting, c.Name(full))
	}
	// Past the repair delay, every shard that waits waits for an agent.
	if st := status(); st.WaitingForAgent != st.Waiting {
		t.Fatalf("waiting %d, of them for an agent %d: want all of them", st.Waiting, st.WaitingForAgent)
	}
}

// TestPutsGoAroundAnAgentWhoseShardStoreIsFull: the fourth agent's shard
// store is full from the start; it says so by gossip (the members list
// shows it), and 2+1 puts, placed on any three of the four by their ids,
// all succeed whole on the other three instead of losing the shards sent
// to it (which failed each put that placed a shard there).
func TestPutsGoAroundAnAgentWhoseShardStoreIsFull(t *testing.T) {
	c := newBlobCluster(t, 4, testcluster.WithConfig(func(cfg *node.Config) {
		if cfg.Name == "n4" {
			cfg.ShardMaxBytes = 1 // no shard fits
		}
	}))
	cl := agentClient(t, c, 0)
	c.WaitFor(20*time.Second, "the members list to show n4's shard store full", func() bool {
		members, err := cl.Members(ctxFor(t, 5*time.Second))
		if err != nil {
			return false
		}
		for _, m := range members {
			if m.Name == "n4" {
				return m.ShardsFull
			}
		}
		return false
	})
	for i := range 6 {
		name := fmt.Sprintf("around-%d", i)
		put(t, cl, name, randomBytes(1<<20, uint64(40+i)), client.PutOptions{Data: 2, Parity: 1})
		if h, _ := statHealth(t, cl, name); h != "healthy" {
			t.Errorf("%s is %s, want healthy", name, h)
		}
		for _, n := range c.Node(0).Store().FSM().Blob(name).Nodes {
			if n == "n4" {
				t.Errorf("%s has shards on n4, whose shard store is full", name)
			}
		}
	}
}

// TestRepairOfAnUnrecoverableBlockWaitsForTheInterval: a block that lost
// more shards than its parity cannot be rebuilt. Each rebuild's own reads
// report the block's lost shards, and each report wakes a repair scan;
// retrying at once, repair spun (fail, report, scan, fail), warning each
// time, for as long as the block stayed lost. A shard whose rebuild
// failed now waits for the next repair interval (an hour here), however
// often reads report the block.
func TestRepairOfAnUnrecoverableBlockWaitsForTheInterval(t *testing.T) {
	c := newBlobCluster(t, 3, testcluster.WithConfig(func(cfg *node.Config) { cfg.BlobRepairInterval = time.Hour }))
	leader := c.LeaderIndex()
	cl := agentClient(t, c, leader)
	put(t, cl, "lost-for-good", randomBytes(1<<20, 41), client.PutOptions{Data: 2, Parity: 1})
	rng := rand.New(rand.NewPCG(41, 41))
	for _, i := range []int{(leader + 1) % 3, (leader + 2) % 3} {
		c.DamageShards(i, rng, math.MaxInt, testcluster.ShardDelete)
	}
	status := func() *pb.RepairStatusResponse { return c.Node(leader).Blobs().RepairStatus("") }
	c.WaitFor(20*time.Second, "a read to report the lost shards and repair to fail rebuilding them", func() bool {
		if _, err := readAll(ctxFor(t, 5*time.Second), cl, "lost-for-good", client.GetOptions{}); err == nil {
			t.Fatal("a blob that lost two of its three shards of every block read back")
		}
		st := status()
		return st.Failed > 0 && st.Retrying > 0 && st.Queued == 0 && st.InProgress == 0
	})
	failed := status().Failed
	for range 5 {
		readAll(ctxFor(t, 5*time.Second), cl, "lost-for-good", client.GetOptions{})
	}
	time.Sleep(time.Second)
	if st := status(); st.Failed != failed || st.Retrying == 0 {
		t.Fatalf("repair tried the lost shards %d more times within the hour of its repair interval (retrying %d); want it to wait",
			st.Failed-failed, st.Retrying)
	}
}
