package storage_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/storage/shardstore"
	"github.com/zrpcio/zrpc/testcluster"
)

// TestAShardDiskThatFillsLosesNothing: one of five agents' shard disk is
// full while the free space it reports still says room (the space went
// between the check and the write). A put still succeeds, with that
// agent's shards missing (3+2 stores a block with 4 of its 5); the blob
// reads back whole; and once the disk has room again repair stores every
// missing shard, so that every holder the metadata records holds its
// shard.
func TestAShardDiskThatFillsLosesNothing(t *testing.T) {
	c := newBlobCluster(t, 5)
	full := 4
	c.FillShardDisk(full, true)
	data := randomBytes(3<<20+5, 41)
	cl := agentClient(t, c, 0)
	put(t, cl, "while-full", data, client.PutOptions{})
	if got := get(t, agentClient(t, c, 1), "while-full", client.GetOptions{}); !bytes.Equal(got, data) {
		t.Fatal("a blob put while an agent's shard disk was full reads back different bytes")
	}
	if _, shards := c.Node(full).Blobs().Shards().Usage(); shards != 0 {
		t.Fatalf("the agent whose disk is full holds %d shards, want none", shards)
	}
	if why := shardsHeld(c, "while-full"); why == "" {
		t.Fatal("every shard is held while one agent's disk is full: the fault did nothing")
	}
	c.FillShardDisk(full, false)
	waitShardsHeld(t, c, "while-full", "repair stores the shards the full disk refused")
	if got := get(t, cl, "while-full", client.GetOptions{}); !bytes.Equal(got, data) {
		t.Fatal("the blob reads back different bytes after repair")
	}
}

// TestAPutThatNeedsAFullDiskFailsSayingSo: with three agents a 2+1 put
// needs every agent's shard; one agent's shard disk is full, so the put
// fails, saying the disk is full (ErrNoSpace), and no blob of that name
// is visible. The same put succeeds once the disk has room.
func TestAPutThatNeedsAFullDiskFailsSayingSo(t *testing.T) {
	c := newBlobCluster(t, 3)
	c.FillShardDisk(2, true)
	data := randomBytes(2<<20, 42)
	cl := agentClient(t, c, 0)
	_, err := cl.PutBlob(ctxFor(t, time.Minute), "needs-all", bytes.NewReader(data), client.PutOptions{})
	if !errors.Is(err, apierr.ErrNoSpace) {
		t.Fatalf("a put that needs a full disk: %v, want ErrNoSpace", err)
	}
	if _, err := tryGet(t, cl, "needs-all", client.GetOptions{}); !errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("a get of the failed put: %v, want not found", err)
	}
	c.FillShardDisk(2, false)
	put(t, cl, "needs-all", data, client.PutOptions{})
	if got := get(t, cl, "needs-all", client.GetOptions{}); !bytes.Equal(got, data) {
		t.Fatal("the put made once there is room reads back different bytes")
	}
}

// TestShardsTheDiskCannotReadAreRebuilt: bad sectors under two shards of
// a blob (reads fail with EIO): a get still returns the blob's bytes, the
// shard it needed is reported by its holder, the other is found by the
// holder's scrubber, and repair rewrites both, so that every recorded
// holder holds its shard with the recorded CRC once the disk reads again.
// Before, an unreadable shard was logged by the scrubber at every pass
// and never rebuilt: the blob stayed a loss closer to gone.
func TestShardsTheDiskCannotReadAreRebuilt(t *testing.T) {
	c := newBlobCluster(t, 3)
	data := randomBytes(3<<20+17, 43)
	put(t, agentClient(t, c, 0), "sectors", data, client.PutOptions{})
	b := c.Leader().Store().FSM().Blob("sectors")
	if len(b.Blocks) < 2 {
		t.Fatalf("blob of %d blocks, want at least 2", len(b.Blocks))
	}
	read := shardstore.ID{Blob: b.Id, Block: 1, Index: 0}     // a data shard a get needs
	scrubbed := shardstore.ID{Blob: b.Id, Block: 0, Index: 2} // a parity shard no get reads
	byAgent := map[int][]shardstore.ID{}
	for _, id := range []shardstore.ID{read, scrubbed} {
		i := agentIndex(t, c, b.Holder(b.Blocks[id.Block], int(id.Index)))
		byAgent[i] = append(byAgent[i], id)
	}
	for i, ids := range byAgent {
		c.UnreadableShards(i, ids...)
	}
	before := rebuiltShards(c)
	if got := get(t, agentClient(t, c, 1), "sectors", client.GetOptions{}); !bytes.Equal(got, data) {
		t.Fatal("a get with an unreadable shard returned different bytes")
	}
	scrubber := agentIndex(t, c, b.Holder(b.Blocks[0], 2))
	if n := c.Node(scrubber).Blobs().ScrubOnce(ctxFor(t, 10*time.Second), 0); n < 1 {
		t.Fatalf("a scrub pass over an unreadable shard reported %d, want it reported", n)
	}
	c.WaitFor(30*time.Second, "repair rewrites both unreadable shards", func() bool {
		return rebuiltShards(c) >= before+2
	})
	for i := range byAgent {
		c.UnreadableShards(i)
	}
	waitShardsHeld(t, c, "sectors", "every shard held with its CRC once the disk reads again")
}

// rebuiltShards sums the shards the running agents' repair has rebuilt
// while each was leader.
func rebuiltShards(c *testcluster.Cluster) uint64 {
	var n uint64
	for i := range c.Size() {
		if nd := c.Node(i); nd != nil {
			n += nd.Blobs().RepairStatus("").RebuiltShards
		}
	}
	return n
}

// TestACorruptShardOnADiskThatFailsWritesMovesToAnotherAgent: four agents,
// a 2+1 blob on three of them; one holder's disk can neither read one of
// its shards (EIO) nor write (EIO). Repair tries to rewrite the shard in
// place, fails, and after the second failure puts it on the fourth
// agent: every recorded holder then holds its shard, and the blob reads
// back whole, while the failing disk still fails.
func TestACorruptShardOnADiskThatFailsWritesMovesToAnotherAgent(t *testing.T) {
	c := newBlobCluster(t, 4)
	data := randomBytes(1<<20+3, 44)
	put(t, agentClient(t, c, 0), "dying", data, client.PutOptions{Data: 2, Parity: 1})
	b := c.Leader().Store().FSM().Blob("dying")
	id := shardstore.ID{Blob: b.Id, Block: 0, Index: 0}
	holder := b.Holder(b.Blocks[0], 0)
	bad := agentIndex(t, c, holder)
	c.UnreadableShards(bad, id)
	c.FailShardDisk(bad, true)
	if n := c.Node(bad).Blobs().ScrubOnce(ctxFor(t, 10*time.Second), 0); n != 1 {
		t.Fatalf("a scrub pass over the unreadable shard reported %d, want 1", n)
	}
	c.WaitFor(30*time.Second, "repair moves the shard off the failing disk", func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		nb := l.Store().FSM().Blob("dying")
		return nb != nil && nb.Holder(nb.Blocks[0], 0) != holder
	})
	waitShardsHeld(t, c, "dying", "every shard held with its CRC")
	if got := get(t, agentClient(t, c, 1), "dying", client.GetOptions{}); !bytes.Equal(got, data) {
		t.Fatal("the blob reads back different bytes after its shard moved")
	}
}
