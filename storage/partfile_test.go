package storage_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/storage/shardstore"
	"github.com/zrpcio/zrpc/testcluster"
)

// smallBlocks makes blobs of many blocks out of little data.
func smallBlocks(c *node.Config) { c.BlobBlockSize = 64 << 10 }

// partFiles lists agent i's files in blob id's directory.
func partFiles(t testing.TB, c *testcluster.Cluster, i int, id string) []string {
	t.Helper()
	dir := filepath.Dir(c.Node(i).Blobs().Shards().Path(shardstore.ID{Blob: id}))
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("agent %d: %v", i, err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestBlobPutMakesOnePartFilePerAgent: a blob of many blocks is one file
// per agent, holding that agent's shard of every block.
func TestBlobPutMakesOnePartFilePerAgent(t *testing.T) {
	c := newBlobCluster(t, 3, testcluster.WithConfig(smallBlocks))
	cl := agentClient(t, c, 0)
	data := randomBytes(20<<16+123, 41) // 21 blocks
	rev := put(t, cl, "many-blocks", data, client.PutOptions{}).Header.Revision
	for i := range 3 {
		c.Node(i).Store().FSM().WaitRevision(ctxFor(t, 10*time.Second), rev)
	}
	b := c.Node(0).Store().FSM().Blob("many-blocks")
	if len(b.Blocks) != 21 {
		t.Fatalf("%d blocks, want 21", len(b.Blocks))
	}
	for i := range 3 {
		files := partFiles(t, c, i, b.Id)
		if len(files) != 1 {
			t.Fatalf("agent %d holds %q for a blob of 21 blocks, want one part file", i, files)
		}
		if n := shardFiles(t, c, i, b.Id); n != 21 {
			t.Fatalf("agent %d's part file holds %d shards, want one per block (21)", i, n)
		}
	}
	if got := get(t, cl, "many-blocks", client.GetOptions{MinRevision: rev}); !bytes.Equal(got, data) {
		t.Fatal("get returned different bytes")
	}
}

// TestBlobFlippedByteInBlock7IsRebuiltAlone: one flipped byte in block 7
// of a part file: a get still returns the blob, the scrubber reports that
// one block, and repair rewrites that block in place, leaving the rest of
// the file as it was.
func TestBlobFlippedByteInBlock7IsRebuiltAlone(t *testing.T) {
	c := newBlobCluster(t, 3, testcluster.WithConfig(smallBlocks))
	cl := agentClient(t, c, 0)
	data := randomBytes(12<<16, 42) // 12 blocks
	rev := put(t, cl, "rot7", data, client.PutOptions{}).Header.Revision
	holder, b := holderIndex(t, c, "rot7", 7, 0)
	c.Node(holder).Store().FSM().WaitRevision(ctxFor(t, 10*time.Second), rev)
	shards := c.Node(holder).Blobs().Shards()
	id := shardstore.ID{Blob: b.Id, Block: 7, Index: 0}
	path := shards.Path(id)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)
	off, err := shards.PayloadOffset(id)
	if err != nil {
		t.Fatal(err)
	}
	flipBit(t, path, off+1000)

	if bad := c.Node(holder).Blobs().ScrubOnce(ctxFor(t, 10*time.Second), 0); bad != 1 {
		t.Fatalf("scrub found %d corrupt shards, want 1 (block 7)", bad)
	}
	if got := get(t, agentClient(t, c, (holder+1)%3), "rot7", client.GetOptions{MinRevision: rev}); !bytes.Equal(got, data) {
		t.Fatal("get with block 7 corrupt returned different bytes")
	}
	c.WaitFor(20*time.Second, "repair rewrites block 7", func() bool { return shards.Verify(id) == nil })
	after, err := os.Stat(path)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("the part file was replaced (%v), not block 7 rewritten in it", err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, good) {
		t.Fatalf("part file after repair differs from the one written by the put (%v)", err)
	}
	if bad, err := shards.VerifyPart(b.Id, 0); err != nil || len(bad) != 0 {
		t.Fatalf("VerifyPart after repair = %v, %v", bad, err)
	}
}
