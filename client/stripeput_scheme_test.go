package client

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// TestStripedPutRefusesAPlacementOtherThanTheSchemeAskedFor: a put that
// names its data and parity shards gets exactly that scheme or a refusal;
// an agent's placement with another is refused before any shard is sent,
// and the put it began is aborted rather than left pending until its
// lease runs out. A put that names none takes the agents' choice.
func TestStripedPutRefusesAPlacementOtherThanTheSchemeAskedFor(t *testing.T) {
	f := newFakeBlobs(t, 4) // answers 2+1
	c := f.client(t)
	data := randomBytes(t, 200<<10)
	_, err := c.PutBlob(testContext(t), "a", bytes.NewReader(data), PutOptions{Size: int64(len(data)), Data: 3, Parity: 1})
	if err == nil || !strings.Contains(err.Error(), "placement has 2+1 shards, the put asked for 3+1") {
		t.Fatalf("put asking for 3+1 given 2+1: %v; want it refused naming both", err)
	}
	f.mu.Lock()
	aborted, pending, opened := slices.Clone(f.aborted), len(f.pending), f.opened
	f.mu.Unlock()
	if len(aborted) != 1 || pending != 0 || opened != 0 {
		t.Fatalf("after the refusal: aborted %v, %d pending, %d shard streams opened; want the put aborted and nothing sent", aborted, pending, opened)
	}
	if _, err := c.PutBlob(testContext(t), "b", bytes.NewReader(data), PutOptions{Size: int64(len(data))}); err != nil {
		t.Fatalf("put taking the agents' scheme: %v", err)
	}
}
