package storage_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
	"github.com/zrpcio/zrpc/testcluster"
)

// Blobs under bad luck: leadership moving in the middle of a repair, a
// partition that outlasts failure detection, a replaced disk. Orphan
// collection runs throughout (fastBlobs: half a second of grace, a pass
// every 200 ms); each test checks that it never deletes a shard the
// metadata records a holder for.

// recordedShard is one shard of a blob as the leader's metadata records
// it, and the running agent holding it (nil: none, or it is down).
type recordedShard struct {
	id     shardstore.ID
	holder string // "" for none
	sum    uint32
	node   *node.Node
}

// recordedShards lists the shards of the blob called name as the
// leader's metadata records them, or says why it cannot.
func recordedShards(c *testcluster.Cluster, name string) ([]recordedShard, string) {
	l := c.Leader()
	if l == nil {
		return nil, "no leader"
	}
	b := l.Store().FSM().Blob(name)
	if b == nil {
		return nil, fmt.Sprintf("the leader %s has no blob %s", l.Name(), name)
	}
	var out []recordedShard
	for bi, blk := range b.Blocks {
		for idx := range blk.Holders {
			r := recordedShard{id: shardstore.ID{Blob: b.Id, Block: uint32(bi), Index: uint16(idx)}, holder: b.Holder(blk, idx), sum: blk.Sums[idx]}
			for i := range c.Size() {
				if c.Name(i) == r.holder {
					r.node = c.Node(i)
				}
			}
			out = append(out, r)
		}
	}
	return out, ""
}

// shardsHeld returns "" when every shard of the blob called name, as the
// leader's metadata records it, has a holder of its own that is a running
// agent holding it with the recorded CRC32C; else what is wrong.
func shardsHeld(c *testcluster.Cluster, name string) string {
	shards, why := recordedShards(c, name)
	if why != "" {
		return why
	}
	seen := make(map[string]bool) // block/holder
	for _, r := range shards {
		block := fmt.Sprintf("%d/%s", r.id.Block, r.holder)
		switch {
		case r.holder == "":
			return fmt.Sprintf("shard %v has no holder", r.id)
		case seen[block]:
			return fmt.Sprintf("block %d has two shards on %s", r.id.Block, r.holder)
		case r.node == nil:
			return fmt.Sprintf("shard %v is on %s, which is down", r.id, r.holder)
		}
		seen[block] = true
		hdr, _, err := r.node.Blobs().Shards().Get(r.id, nil)
		if err != nil {
			return fmt.Sprintf("shard %v on its holder %s: %v", r.id, r.holder, err)
		}
		if hdr.Sum != r.sum {
			return fmt.Sprintf("shard %v on its holder %s has CRC32C %08x, the metadata %08x", r.id, r.holder, hdr.Sum, r.sum)
		}
	}
	return ""
}

// waitShardsHeld waits until shardsHeld finds nothing wrong, logging
// what it finds wrong whenever that changes.
func waitShardsHeld(t testing.TB, c *testcluster.Cluster, name, what string) {
	t.Helper()
	var last string
	c.WaitFor(30*time.Second, what, func() bool {
		s := shardsHeld(c, name)
		if s != last && s != "" {
			t.Logf("waiting for %s: %s", name, s)
		}
		last = s
		return s == ""
	})
}

// watchRecordedShards checks, every 100 ms until the test ends, that each
// running agent the leader's metadata names as the holder of a shard of
// the blob called name has that shard. Repair records a holder only once
// the shard is durable there, and nothing but orphan collection deletes
// shards in these tests: a shard missing on its holder, and still
// recorded there half a second later (a new leader's replica may lag for
// a moment), was deleted under its record. Agents named in ignore are
// not checked (their disk is being replaced).
func watchRecordedShards(t *testing.T, c *testcluster.Cluster, name string, ignore ...string) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			for _, m := range missingRecordedShards(c, name, ignore) {
				select {
				case <-stop:
					return
				case <-time.After(500 * time.Millisecond):
				}
				if again := missingRecordedShards(c, name, ignore); slices.Contains(again, m) {
					t.Errorf("shard %s is recorded on its holder, which does not have it: orphan collection deleted it", m)
					return
				}
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		wg.Wait()
	})
}

// missingRecordedShards lists the shards of the blob called name that the
// leader's metadata places on a running agent that does not have them,
// as "<id> on <agent>", leaving out the agents named in ignore.
func missingRecordedShards(c *testcluster.Cluster, name string, ignore []string) []string {
	shards, _ := recordedShards(c, name)
	var missing []string
	for _, r := range shards {
		if r.node == nil || slices.Contains(ignore, r.holder) {
			continue
		}
		if _, _, err := r.node.Blobs().Shards().Get(r.id, nil); errors.Is(err, shardstore.ErrNotFound) {
			missing = append(missing, fmt.Sprintf("%v on %s", r.id, r.holder))
		}
	}
	return missing
}

// plantOrphans stores, on every running agent, one shard of a blob that
// does not exist, and returns its id: orphan collection must delete it
// (the leader confirming), which shows collection ran on every agent.
func plantOrphans(t testing.TB, c *testcluster.Cluster, seed uint64) shardstore.ID {
	t.Helper()
	payload := randomBytes(512, seed)
	id := shardstore.ID{Blob: fmt.Sprintf("%016x", seed|1<<63), Index: 0}
	h := shardstore.Header{ID: id, K: 2, M: 1, BlockLen: 1024, ShardLen: 512, Sum: codec.Checksum(payload), BlockSize: 1024}
	for i := range c.Size() {
		if n := c.Node(i); n != nil {
			if err := n.Blobs().Shards().Put(h, payload); err != nil {
				t.Fatalf("plant an orphan shard on %s: %v", c.Name(i), err)
			}
		}
	}
	return id
}

// waitCollected waits until no running agent holds shard id.
func waitCollected(t testing.TB, c *testcluster.Cluster, id shardstore.ID) {
	t.Helper()
	c.WaitFor(20*time.Second, fmt.Sprintf("every running agent's orphan collection deletes the orphan %v", id), func() bool {
		for i := range c.Size() {
			if n := c.Node(i); n != nil {
				if _, _, err := n.Blobs().Shards().Get(id, nil); !errors.Is(err, shardstore.ErrNotFound) {
					return false
				}
			}
		}
		return true
	})
}

// putAvoiding puts blobs of data under name-0, name-1, ... until one's
// shards avoid agent avoid, deletes the others, and returns the name and
// metadata of the one kept.
func putAvoiding(t testing.TB, c *testcluster.Cluster, cl *client.Client, name string, data []byte, opts client.PutOptions, avoid int) (string, *pb.Blob) {
	t.Helper()
	for try := range 20 {
		n := fmt.Sprintf("%s-%d", name, try)
		rev := put(t, cl, n, data, opts).Header.Revision
		l := c.Node(avoid)
		l.Store().FSM().WaitRevision(ctxFor(t, 10*time.Second), rev)
		b := l.Store().FSM().Blob(n)
		if !strings.Contains(strings.Join(b.Nodes, ","), c.Name(avoid)) {
			return n, b
		}
		if _, err := cl.DeleteBlob(ctxFor(t, 5*time.Second), n); err != nil {
			t.Fatalf("delete %s: %v", n, err)
		}
	}
	t.Fatalf("20 blobs all placed a shard on %s", c.Name(avoid))
	return "", nil
}

// TestRepairInterruptedByLeaderLossLeavesEveryRecordedHolderHoldingItsShard:
// a holder dies; while the leader's repair is rebuilding and storing the
// lost shards (their agents' fsyncs are slow), the leader is killed or
// cut off by a partition: in the middle of the batch, or once a rebuilt
// shard is durable and not yet recorded (the leader's Raft disk is slow). The new leader
// finishes the repair: every block ends with k+m recorded holders that
// are running and hold a good shard, the blob reads back with its
// SHA-256, and orphan collection, which runs throughout and after, never
// deletes a shard under its record.
func TestRepairInterruptedByLeaderLossLeavesEveryRecordedHolderHoldingItsShard(t *testing.T) {
	for _, tc := range []struct {
		name      string
		durable   bool // wait for a rebuilt shard durable and not recorded
		partition bool // cut the leader off instead of killing it
	}{
		{name: "killed while rebuilding"},
		{name: "partitioned while rebuilding", partition: true},
		{name: "killed before recording", durable: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Five voters: the cluster keeps a quorum with a holder and
			// the leader gone.
			c := newBlobCluster(t, 5, testcluster.WithVoters(5))
			leader := c.LeaderIndex()
			data := randomBytes(5<<20+77, 41)
			// 2+1 on five agents: two agents hold no shard, and can take
			// the rebuilt ones. The blob must not be on the leader, whose
			// loss would otherwise be a second lost shard of each block.
			name, b := putAvoiding(t, c, agentClient(t, c, (leader+1)%5), "failover", data, client.PutOptions{Data: 2, Parity: 1}, leader)
			victim := agentIndex(t, c, b.Nodes[0])
			var free []int
			for i := range 5 {
				if !strings.Contains(strings.Join(b.Nodes, ","), c.Name(i)) {
					free = append(free, i)
					c.SlowShardDisk(i, 1500*time.Millisecond)
				}
			}
			watchRecordedShards(t, c, name)
			c.Kill(victim)
			// A batch is in progress from the rebuild until the record;
			// the slow fsyncs keep it there for a while.
			c.WaitFor(20*time.Second, "the leader's repair to rebuild the lost shards", func() bool {
				return c.Node(leader).Blobs().RepairStatus("").InProgress > 0
			})
			if tc.durable {
				c.SlowDisk(leader, time.Second)
				c.WaitFor(20*time.Second, "a rebuilt shard durable and not recorded", func() bool {
					return unrecordedShards(c, free, b.Id, leader) > 0
				})
			}
			var survivors []int
			for i := range 5 {
				if i != leader && i != victim {
					survivors = append(survivors, i)
				}
			}
			if tc.durable {
				// The old leader's record of the rebuilt shard may reach
				// the survivors' logs, uncommitted: the new leader's
				// replica lacks it until its first entry commits, which
				// a slow Raft disk puts off while the agents ask it
				// which of their shards are referenced.
				for _, i := range survivors {
					c.SlowDisk(i, 700*time.Millisecond)
				}
			}
			if tc.partition {
				var others []int
				for i := range 5 {
					if i != leader {
						others = append(others, i)
					}
				}
				c.Partition([]int{leader}, others)
			} else {
				c.Kill(leader)
			}
			c.WaitFor(20*time.Second, "a new leader", func() bool {
				l := c.LeaderIndex()
				return l >= 0 && l != leader
			})
			for _, i := range free {
				c.SlowShardDisk(i, 0)
			}
			c.SlowDisk(leader, 0)
			waitShardsHeld(t, c, name, "the new leader's repair to give every block k+m running holders holding their shards")
			for _, i := range survivors {
				c.SlowDisk(i, 0)
			}
			if tc.partition {
				c.Heal()
			}
			reader := agentClient(t, c, agentIndex(t, c, b.Nodes[1])) // a holder that stayed
			if got := get(t, reader, name, client.GetOptions{}); !bytes.Equal(got, data) {
				t.Fatal("the repaired blob reads back different bytes")
			}
			waitCollected(t, c, plantOrphans(t, c, 42))
			if s := shardsHeld(c, name); s != "" {
				t.Fatalf("after orphan collection ran on every agent: %s", s)
			}
		})
	}
}

// unrecordedShards counts the durable shards of blob id on the agents
// of idxs that agent meta's replica does not place there.
func unrecordedShards(c *testcluster.Cluster, idxs []int, id string, meta int) int {
	b := c.Node(meta).Store().FSM().BlobByID(id)
	if b == nil {
		return 0
	}
	n := 0
	for _, i := range idxs {
		c.Node(i).Blobs().Shards().Walk(func(s shardstore.ID, _ int64, _ time.Time) error {
			if s.Blob == id && b.Holder(b.Blocks[s.Block], int(s.Index)) != c.Name(i) {
				n++
			}
			return nil
		})
	}
	return n
}

// strayShards lists the shards (committed or staged) agent i holds that
// the leader's metadata does not place on it.
func strayShards(t testing.TB, c *testcluster.Cluster, i int) []shardstore.ID {
	l := c.Leader()
	n := c.Node(i)
	if l == nil || n == nil {
		return nil
	}
	fsm := l.Store().FSM()
	placed := func(id shardstore.ID) bool {
		b := fsm.BlobByID(id.Blob)
		return b != nil && int(id.Block) < len(b.Blocks) && b.Holder(b.Blocks[id.Block], int(id.Index)) == c.Name(i)
	}
	var stray []shardstore.ID
	n.Blobs().Shards().Walk(func(id shardstore.ID, _ int64, _ time.Time) error {
		if !placed(id) {
			stray = append(stray, id)
		}
		return nil
	})
	for _, st := range n.Blobs().Shards().Staged() {
		stray = append(stray, st.ID)
	}
	return stray
}

// holdsShardOf reports whether the leader's metadata places a shard of
// blob b on agent name.
func holdsShardOf(b *pb.Blob, name string) bool {
	for _, blk := range b.Blocks {
		for idx := range blk.Holders {
			if b.Holder(blk, idx) == name {
				return true
			}
		}
	}
	return false
}

// TestAgentCutOffPastFailureDetectionCollectsOnlyOrphansAfterHealing: one
// agent (a follower, or the leader) holding shards is cut off long enough to be found failed and to
// have its shards rebuilt elsewhere, while blobs are deleted and put on
// the majority's side. After the partition heals, its orphan collection
// (its replica lagging behind, its Raft disk slow) deletes no shard the
// metadata records, the shards of the deleted blobs and of the moved
// ones on it are collected, and every live blob reads back intact through
// every agent.
func TestAgentCutOffPastFailureDetectionCollectsOnlyOrphansAfterHealing(t *testing.T) {
	t.Run("a follower", func(t *testing.T) { testCutOff(t, false) })
	t.Run("the leader", func(t *testing.T) { testCutOff(t, true) })
}

// testCutOff is TestAgentCutOffPastFailureDetectionCollectsOnlyOrphansAfterHealing,
// cutting off the leader or the follower holding the most blobs' shards.
func testCutOff(t *testing.T, cutLeader bool) {
	c := newBlobCluster(t, 5, testcluster.WithDeadNodeReap(time.Minute))
	leader := c.LeaderIndex()
	cl := agentClient(t, c, leader)
	opts := client.PutOptions{Data: 2, Parity: 1}
	data := make(map[string][]byte)
	var names []string
	for i := range 6 {
		name := fmt.Sprintf("cutoff/before-%d", i)
		data[name] = randomBytes(1<<20+i*300<<10, uint64(50+i))
		put(t, cl, name, data[name], opts)
		names = append(names, name)
	}
	// The agent cut off: the leader, or the follower holding shards of
	// the most blobs.
	fsm := c.Node(leader).Store().FSM()
	cut, most := leader, 0
	for i := range 5 {
		held := 0
		for _, name := range names {
			if holdsShardOf(fsm.Blob(name), c.Name(i)) {
				held++
			}
		}
		if !cutLeader && i != leader && held > most {
			cut, most = i, held
		}
	}
	var doomed, kept []string
	for _, name := range names {
		if holdsShardOf(fsm.Blob(name), c.Name(cut)) && len(doomed) < 2 {
			doomed = append(doomed, name)
		} else {
			kept = append(kept, name)
		}
	}
	doomedIDs := make(map[string]bool)
	for _, name := range doomed {
		doomedIDs[fsm.Blob(name).Id] = true
	}
	for _, name := range kept {
		watchRecordedShards(t, c, name)
	}
	var majority []int
	for i := range 5 {
		if i != cut {
			majority = append(majority, i)
		}
	}
	c.Partition([]int{cut}, majority)
	c.WaitFor(20*time.Second, fmt.Sprintf("the leader to find %s failed", c.Name(cut)), func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		for _, n := range l.Store().FSM().Nodes() {
			if n.Name == c.Name(cut) {
				return n.Health == pb.Health_CRITICAL
			}
		}
		return false
	})
	via := agentClient(t, c, majority[0])
	for _, name := range doomed {
		if _, err := via.DeleteBlob(ctxFor(t, 10*time.Second), name); err != nil {
			t.Fatalf("delete %s on the majority's side: %v", name, err)
		}
		delete(data, name)
	}
	for i := range 2 {
		name := fmt.Sprintf("cutoff/during-%d", i)
		data[name] = randomBytes(1<<20+i*500<<10, uint64(60+i))
		putAgain(t, via, name, data[name], opts)
		kept = append(kept, name)
		watchRecordedShards(t, c, name)
	}
	c.WaitFor(30*time.Second, fmt.Sprintf("repair to move every shard off %s", c.Name(cut)), func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		for _, name := range kept {
			if b := l.Store().FSM().Blob(name); b == nil || holdsShardOf(b, c.Name(cut)) {
				return false
			}
		}
		return true
	})
	c.SlowDisk(cut, 100*time.Millisecond)
	c.Heal()
	waitAlive(t, c, 5)
	for _, name := range kept {
		waitShardsHeld(t, c, name, fmt.Sprintf("%s to have k+m running holders holding their shards", name))
	}
	c.WaitFor(30*time.Second, fmt.Sprintf("%s's orphan collection to delete the shards of deleted and moved blobs", c.Name(cut)), func() bool {
		return len(strayShards(t, c, cut)) == 0
	})
	c.SlowDisk(cut, 0)
	var rev uint64
	c.WaitFor(10*time.Second, "a leader", func() bool {
		l := c.Leader()
		if l != nil {
			rev = l.Store().FSM().Revision()
		}
		return l != nil
	})
	for i := range 5 {
		for name, want := range data {
			if got := get(t, agentClient(t, c, i), name, client.GetOptions{MinRevision: rev}); !bytes.Equal(got, want) {
				t.Fatalf("%s read through %s: different bytes", name, c.Name(i))
			}
		}
	}
	waitCollected(t, c, plantOrphans(t, c, 43))
	for _, name := range kept {
		// The healed agent can set off an election: the holders are read
		// from whichever agent leads once one does.
		var s string
		c.WaitFor(10*time.Second, "a leader to read "+name+"'s holders from", func() bool {
			s = shardsHeld(c, name)
			return s != "no leader"
		})
		if s != "" {
			t.Fatalf("after orphan collection ran on every agent: %s", s)
		}
	}
	for i := range 5 {
		for _, id := range strayShards(t, c, i) {
			if doomedIDs[id.Blob] {
				t.Errorf("%s still holds shard %v of a deleted blob", c.Name(i), id)
			}
		}
	}
}

// putAgain puts as put does, and puts again, at most twice more, a put
// refused for not enough shards: while the cluster settles after a
// partition, a loaded machine's gossip may take a holder for failed for
// a moment, and a put that cannot confirm its shards fails, as it must,
// saying to retry.
func putAgain(t testing.TB, cl *client.Client, name string, data []byte, opts client.PutOptions) {
	t.Helper()
	for try := 1; ; try++ {
		_, err := cl.PutBlob(ctxFor(t, 2*time.Minute), name, bytes.NewReader(data), opts)
		if err == nil {
			return
		}
		if !errors.Is(err, apierr.ErrNotEnoughShards) || try == 3 {
			t.Fatalf("put %s (%d bytes), try %d: %v", name, len(data), try, err)
		}
		t.Logf("put %s, try %d: %v; putting again", name, try, err)
		time.Sleep(500 * time.Millisecond)
	}
}
