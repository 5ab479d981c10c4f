package clientchain

import (
	"context"
	"testing"
	"time"
)

// Calls that start together share the slot's deadline, and a busy slot
// spreads them over several shard contexts, so they do not all register
// under one lock.
func TestSlotSpreadsABusySlotOverShardsOfOneDeadline(t *testing.T) {
	c := newSlotClock(2 * time.Second)
	now := time.Now()
	seen := map[context.Context]bool{}
	var deadline time.Time
	for i := range 10000 {
		ctx := c.slot(now)
		dl, ok := ctx.Deadline()
		if !ok {
			t.Fatal("a slot context has no deadline")
		}
		if i == 0 {
			deadline = dl
		} else if !dl.Equal(deadline) {
			t.Fatalf("calls of one slot got deadlines %v and %v, want one", deadline, dl)
		}
		seen[ctx] = true
	}
	if !deadline.After(now.Add(2 * time.Second)) {
		t.Fatalf("deadline %v is not after start+timeout %v", deadline, now.Add(2*time.Second))
	}
	if len(seen) < 2 || len(seen) > c.shards {
		t.Fatalf("10000 calls of one slot used %d shard contexts, want between 2 and %d", len(seen), c.shards)
	}
}
