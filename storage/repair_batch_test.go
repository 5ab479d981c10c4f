package storage

import (
	"slices"
	"testing"
	"time"
)

// TestFillBatchEndsWhenEveryHeldBackTaskIsOfABlockInTheBatch: tasks held
// back because their block is already in the batch are looked at once
// and held back again; filling ends (it used to spin on them forever,
// never reading the queue), and the queued tasks of other blocks join.
func TestFillBatchEndsWhenEveryHeldBackTaskIsOfABlockInTheBatch(t *testing.T) {
	shard := func(blob string, block, index uint32) task {
		return task{key: shardKey{blob: blob, block: block, index: index}}
	}
	queue := make(chan task, 4)
	queue <- shard("b", 0, 0)
	queue <- shard("a", 0, 3)

	type result struct{ batch, next []task }
	done := make(chan result, 1)
	go func() {
		batch, next := fillBatch([]task{shard("a", 0, 0)}, []task{shard("a", 0, 1), shard("a", 0, 2)}, queue)
		done <- result{batch, next}
	}()
	var got result
	select {
	case got = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("fillBatch did not return: it spins on the held-back tasks")
	}
	wantBatch := []task{shard("a", 0, 0), shard("b", 0, 0)}
	wantNext := []task{shard("a", 0, 1), shard("a", 0, 2), shard("a", 0, 3)}
	if !slices.Equal(got.batch, wantBatch) || !slices.Equal(got.next, wantNext) {
		t.Fatalf("batch %v, held back %v; want %v and %v", got.batch, got.next, wantBatch, wantNext)
	}
}
