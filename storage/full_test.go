package storage_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/client"
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
