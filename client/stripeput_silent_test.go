package client

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// probeQuickly shortens the health-check interval and timeout for the
// rest of t. Call it before making clients (cleanups run last first).
func probeQuickly(t *testing.T) {
	p, to := endpointProbe, probeTimeout
	endpointProbe, probeTimeout = 100*time.Millisecond, 100*time.Millisecond
	t.Cleanup(func() { endpointProbe, probeTimeout = p, to })
}

// A striped put leaves a shard agent that stops answering (stopped, or
// cut off by a network that drops its packets) once it leaves a health
// check unanswered, long before the stall bound: while the agent takes
// no more data, its later blocks go to the spare; while the agent holds
// back its confirmation of what it took, those shards are lost and left
// to repair. Either way the put is committed.
func TestStripedPutLeavesAShardAgentThatStopsAnswering(t *testing.T) {
	for _, tc := range []struct {
		name string
		// hang sets the fault up on f's agent 1 and returns the client.
		hang func(t *testing.T, f *fakeBlobs) *Client
		// moved: the spare holds shard 1 from block 3 on; else no
		// block's shard 1 is held.
		moved bool
	}{
		{"while it takes data", func(t *testing.T, f *fakeBlobs) *Client {
			f.agents[1].silent.Store(true)
			return f.client(t, stallLink(f.agents[1].addr, 3))
		}, true},
		{"before it confirms", func(t *testing.T, f *fakeBlobs) *Client {
			f.agents[1].silent.Store(true)
			f.agents[1].holdClose.Store(true)
			return f.client(t)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			probeQuickly(t)
			f := newFakeBlobs(t, 5) // 2+2 on agents 0-3, agent 4 the spare
			f.k, f.m = 2, 2
			c := tc.hang(t, f)
			// Far beyond the test's deadline: only the health check
			// can move the put on in time.
			c.cfg.shardStall = time.Hour
			data := randomBytes(t, 8*int(f.blockSize))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := c.PutBlob(ctx, "a", bytes.NewReader(data), PutOptions{Size: int64(len(data))}); err != nil {
				t.Fatalf("PutBlob: %v", err)
			}
			b := onlyCommit(t, f).Blob
			for bi, blk := range b.Blocks {
				want := ""
				if tc.moved && bi >= 3 {
					want = "agent-4"
				}
				if got := b.Holder(blk, 1); got != want {
					t.Errorf("block %d shard 1 held by %q, want %q", bi, got, want)
				}
			}
			if got := f.decodeFromHolders(t, b); !bytes.Equal(got, data) {
				t.Fatal("the shards the metadata names do not decode to the blob")
			}
		})
	}
}

// A shard agent that is slow to take data or to confirm it, but answers
// its health checks, is waited for: a put to a slow disk is not a failed
// agent.
func TestStripedPutWaitsForASlowShardAgentThatAnswersHealthChecks(t *testing.T) {
	probeQuickly(t)
	f := newFakeBlobs(t, 5)
	f.k, f.m = 2, 2
	c := f.client(t, delayLink(f.agents[1].addr, 800*time.Millisecond))
	c.cfg.shardStall = time.Hour
	data := randomBytes(t, 4*int(f.blockSize))
	if _, err := c.PutBlob(testContext(t), "a", bytes.NewReader(data), PutOptions{Size: int64(len(data))}); err != nil {
		t.Fatalf("PutBlob: %v", err)
	}
	b := onlyCommit(t, f).Blob
	for bi, blk := range b.Blocks {
		if got := b.Holder(blk, 1); got != "agent-1" {
			t.Errorf("block %d shard 1 held by %q, want the slow agent-1", bi, got)
		}
	}
}
