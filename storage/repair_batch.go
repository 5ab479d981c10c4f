package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// A repair worker takes the queued shards in batches: it rebuilds each
// batch's shards, stages them on their new holders, makes them durable
// there (syncOn, bounded as a put's sync), and records their new places,
// one Raft entry per blob.

// repairBatch is how many shards a worker rebuilds before it records
// their new places, in one Raft entry per blob.
const repairBatch = 32

func (r *repairer) work(ctx context.Context) {
	var next []task // tasks held back from the last batch
	for {
		var batch []task
		if len(next) > 0 {
			batch, next = next[:1], next[1:]
		} else {
			select {
			case <-ctx.Done():
				return
			case t := <-r.queue:
				batch = []task{t}
			}
		}
		batch, next = fillBatch(batch, next, r.queue)
		r.runBatch(ctx, batch)
	}
}

// fillBatch adds to batch, without waiting, the held-back tasks and then
// queued ones, at most one shard per block (the placing reservations keep
// workers apart) and repairBatch in all. It returns the batch and the
// tasks held back for a later one: those of a block already in the batch,
// and held-back ones it did not get to. Each held-back task is looked at
// once per call, so a batch whose blocks hold every held-back task ends.
func fillBatch(batch, held []task, queue <-chan task) (_, next []task) {
	blocks := make(map[blockRef]bool, repairBatch)
	for _, t := range batch {
		blocks[blockRef{t.key.blob, t.key.block}] = true
	}
	for len(batch) < repairBatch && len(next) <= repairBatch {
		var t task
		if len(held) > 0 {
			t, held = held[0], held[1:]
		} else {
			select {
			case t = <-queue:
			default:
				return batch, append(next, held...)
			}
		}
		bk := blockRef{t.key.blob, t.key.block}
		if blocks[bk] {
			next = append(next, t)
			continue
		}
		blocks[bk] = true
		batch = append(batch, t)
	}
	return batch, append(next, held...)
}

// rebuilt is one shard a worker rebuilt.
type rebuilt struct {
	t        task
	bytes    int
	reserved string             // the agent reserved for it in placing ("" for none)
	placed   *pb.ShardPlacement // where the rebuilt shard is staged
	err      error
	// stored: err is the target's, which failed to stage or sync the
	// rebuilt shard (its disk, or the agent itself), not the rebuild's.
	stored bool
}

// runBatch rebuilds a batch of shards, a few at once, staging them on
// their agents; then makes them durable with one SyncShards per agent and
// blob, and records the moved ones with one BlobShards entry per blob.
func (r *repairer) runBatch(ctx context.Context, batch []task) {
	r.mu.Lock()
	r.inProgress += len(batch)
	r.mu.Unlock()
	results := make([]rebuilt, len(batch))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, t := range batch {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = r.rebuild(ctx, t)
		}()
	}
	wg.Wait()
	r.syncRebuilt(ctx, results)
	byBlob := make(map[string][]int)
	for i, res := range results {
		if res.err == nil && res.placed != nil && res.placed.Node != r.currentHolder(res.t) {
			byBlob[res.t.key.blob] = append(byBlob[res.t.key.blob], i)
		}
	}
	for id, idxs := range byBlob {
		cmd := &pb.BlobShards{Id: id}
		for _, i := range idxs {
			cmd.Shards = append(cmd.Shards, results[i].placed)
		}
		if _, err := r.s.cluster.Propose(ctx, &pb.Command{Kind: &pb.Command_BlobShards{BlobShards: cmd}}); err != nil {
			for _, i := range idxs {
				results[i].err = fmt.Errorf("record repaired shard on %s: %w", results[i].placed.Node, err)
			}
		}
	}
	r.release(results)
	done, bytes, moved := 0, 0, 0 // moved: off a leaving agent, of done
	var failed []rebuilt          // failures warned of here, once for the batch
	for _, res := range results {
		r.finish(res)
		switch {
		case res.err == nil:
			done++
			bytes += res.bytes
			if res.t.reason == reasonLeaving {
				moved++
			}
		case !errors.Is(res.err, apierr.ErrNoSpace): // finish warns of those
			failed = append(failed, res)
		}
	}
	switch {
	case done > 0 && moved == done:
		r.s.log.Info("shards moved off a leaving agent", "shards", done, "bytes", bytes, "failed", len(batch)-done)
	case done > 0:
		r.s.log.Info("shards repaired", "shards", done, "bytes", bytes, "failed", len(batch)-done, "moved_off_leaving", moved)
	}
	if len(failed) > 0 {
		first := failed[0]
		r.s.log.Warn("shard repairs failed; each is tried again after the repair interval", "failed", len(failed),
			"in", r.s.cfg.RepairInterval, "first_blob_id", first.t.key.blob, "first_block", first.t.key.block,
			"first_shard", first.t.key.index, "reason", first.t.reason, "err", first.err)
	}
}

// syncRebuilt makes the staged rebuilt shards durable, one SyncShards per
// agent and blob naming the batch's own shards: another batch's shards
// of the blob staged on that agent stay staged, for that batch's sync.
// The shards of a sync that fails, or that makes fewer of them durable
// than were staged there (the agent restarted and lost them), are
// failed: their agent must not be recorded as their holder.
//
// Each sync is bounded as a put's is (syncWithin): an agent whose disk
// hangs in fsync, this one included, would otherwise hold the batch, and
// with it every shard queued behind it, for as long as the disk hangs.
// The shards of a sync not done in time are failed, and rebuilt again
// after the repair interval; nothing is deleted (a commit that ends late
// leaves copies no metadata names, which orphan collection removes, or
// rewrites a corrupt copy in place with the right bytes).
func (r *repairer) syncRebuilt(ctx context.Context, results []rebuilt) {
	type target struct{ node, blob string }
	groups := make(map[target][]int)
	for i, res := range results {
		if res.err == nil && res.placed != nil {
			k := target{res.placed.Node, res.t.key.blob}
			groups[k] = append(groups[k], i)
		}
	}
	var wg sync.WaitGroup
	for k, idxs := range groups {
		wg.Go(func() {
			refs := make([]*pb.ShardRef, len(idxs))
			var size int64
			for j, i := range idxs {
				refs[j] = &pb.ShardRef{BlobId: k.blob, Block: results[i].placed.Block, Index: results[i].placed.Index}
				size += int64(results[i].bytes)
			}
			n, err := r.syncOn(ctx, k.node, k.blob, refs, size)
			if err == nil && n < len(idxs) {
				err = fmt.Errorf("agent %s made %d of the %d rebuilt shards of %s staged there durable (did it restart?)",
					k.node, n, len(idxs), k.blob)
			}
			if err != nil {
				for _, i := range idxs {
					results[i].err, results[i].stored = err, true
				}
			}
		})
	}
	wg.Wait()
}

// syncOn makes the rebuilt shards refs of blob id, size bytes in all,
// staged on node durable, within syncWithin(size), and returns how many
// of them were staged there. Shards not made durable in time are not
// recorded, and rebuilt again after the repair interval.
func (r *repairer) syncOn(ctx context.Context, node, id string, refs []*pb.ShardRef, size int64) (int, error) {
	s := r.s
	n, bound, hung, err := s.syncBounded(ctx, node, id, refs, size, func(_ int, err error) {
		s.log.Info("a commit of rebuilt shards that repair stopped waiting for has ended; the shards are rebuilt again",
			"blob_id", id, "shards", len(refs), "err", err)
	})
	if !hung {
		return n, err
	}
	err = fmt.Errorf("%s: %w", s.diskHangs(node, "rebuilt shards of "+id, size, bound), err)
	s.log.Warn("an agent did not make rebuilt shards durable in time; repair moves on and rebuilds them again after the repair interval",
		"agent", node, "blob_id", id, "shards", len(refs), "in", s.cfg.RepairInterval, "err", err)
	return 0, err
}

// currentHolder is the agent the metadata names for the task's shard now.
func (r *repairer) currentHolder(t task) string {
	return holderOf(r.s.cluster.Meta().BlobByID(t.key.blob), t.key.block, t.key.index)
}

func (r *repairer) finish(res rebuilt) {
	t := res.t
	// A rewrite of a corrupt copy that its own agent failed to store.
	inPlaceFailed := res.err != nil && res.stored && t.reason == reasonCorrupt &&
		res.reserved != "" && res.reserved == r.currentHolder(t)
	r.mu.Lock()
	r.inProgress--
	delete(r.queued, t.key)
	newlyFull, fullWait := false, time.Duration(0)
	if res.err != nil {
		r.failures++
		r.lastErr = res.err.Error()
		now := r.s.now()
		r.retry[t.key] = now
		switch {
		case res.reserved != "" && errors.Is(res.err, apierr.ErrNoSpace):
			newlyFull = !r.refusedSpace(res.reserved, now)
			fullWait = r.refuseSpace(res.reserved, now)
		case inPlaceFailed:
			r.inPlace[t.key]++
		}
	} else {
		delete(r.full, res.reserved)
		delete(r.inPlace, t.key)
		r.rebuilt++
		r.rebuiltB += uint64(res.bytes)
		delete(r.corrupt, copyKey{t.key, t.node})
		delete(r.retry, t.key)
	}
	r.mu.Unlock()
	if res.err != nil {
		r.s.metrics.repairFailed.Inc()
		switch {
		case newlyFull:
			r.s.log.Warn("an agent has no space for a rebuilt shard; repair places no shard on it for a while (free space there, or add agents)",
				"agent", res.reserved, "for", fullWait, "blob_id", t.key.blob, "block", t.key.block, "shard", t.key.index, "err", res.err)
		case errors.Is(res.err, apierr.ErrNoSpace):
			r.s.log.Debug("shard repair failed: no space", "agent", res.reserved, "blob_id", t.key.blob,
				"block", t.key.block, "shard", t.key.index, "err", res.err)
		default: // runBatch warns once for its batch
			r.s.log.Debug("shard repair failed", "blob_id", t.key.blob,
				"block", t.key.block, "shard", t.key.index, "reason", t.reason, "err", res.err)
		}
		return
	}
	r.s.metrics.repairShards.Inc()
	r.s.metrics.repairBytes.Add(float64(res.bytes))
	r.s.log.Debug("shard repaired", "blob_id", t.key.blob, "block", t.key.block, "shard", t.key.index,
		"reason", t.reason, "bytes", res.bytes)
}
