package storage

// Rebuilding one shard for repair: reading it from a leaving holder or
// reconstructing it from the block's other shards, choosing the agent it
// goes to (with per-block reservations that keep workers apart) and
// staging it there. repair.go scans for such shards, batches them and
// records their new holders.

import (
	"context"
	"errors"
	"fmt"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/placement"
)

var errNoTarget = errors.New("no alive agent without a shard of this block")

// rebuild reconstructs one shard from the others and stores it on a
// healthy agent: its own agent again when that agent is alive (a corrupt
// shard is rewritten in place), else the best-ranked alive agent that holds
// no shard of the block.
func (r *repairer) rebuild(ctx context.Context, t task) rebuilt {
	res := rebuilt{t: t}
	res.bytes, res.placed, res.err = r.rebuildShard(ctx, t, &res.reserved, &res.stored)
	return res
}

// rebuildShard rebuilds t's shard and stages it on its target, whose
// reservation it records in *reserved; *stored says the error, if any,
// is the target's failure to stage it.
func (r *repairer) rebuildShard(ctx context.Context, t task, reserved *string, stored *bool) (int, *pb.ShardPlacement, error) {
	s := r.s
	b := s.cluster.Meta().BlobByID(t.key.blob)
	if b == nil || int(t.key.block) >= len(b.Blocks) {
		return 0, nil, nil // deleted or overwritten meanwhile
	}
	blk := b.Blocks[t.key.block]
	idx := int(t.key.index)
	target, err := r.target(b, int(t.key.block), idx, t.reason)
	if err != nil {
		return 0, nil, err
	}
	*reserved = target
	ref := &pb.ShardRef{BlobId: b.Id, Block: t.key.block, Index: t.key.index}
	payload, err := r.rebuildPayload(ctx, b, t, ref)
	if err != nil {
		return 0, nil, err
	}
	sum := codec.Checksum(payload)
	if sum != blk.Sums[idx] {
		return 0, nil, fmt.Errorf("%w: rebuilt shard has checksum %08x, metadata says %08x", ErrCorrupt, sum, blk.Sums[idx])
	}
	sc := Scheme{K: int(b.DataShards), M: int(b.ParityShards)}
	if err := s.putShard(ctx, target, ref, sc, blobBlockSize(b), int(blk.Len), sum, payload, true); err != nil {
		*stored = true
		return 0, nil, err
	}
	return len(payload), &pb.ShardPlacement{Block: t.key.block, Index: t.key.index, Node: target, Sum: sum}, nil
}

// rebuildPayload returns the bytes of t's shard: a leaving agent's copy
// read from it (one read instead of k, and the only way to move a shard
// of a blob without parity), else, or when that copy cannot be read,
// reconstructed from the block's other shards.
func (r *repairer) rebuildPayload(ctx context.Context, b *pb.Blob, t task, ref *pb.ShardRef) ([]byte, error) {
	s := r.s
	blk := b.Blocks[t.key.block]
	idx := int(t.key.index)
	if t.reason == reasonLeaving {
		payload, err := s.getShardInto(ctx, t.node, ref, blk.Sums[idx], false, nil, nil)
		if err == nil || b.ParityShards == 0 {
			return payload, err
		}
		s.log.Debug("could not copy a leaving agent's shard; rebuilding it from the others", "agent", t.node,
			"blob_id", b.Id, "block", t.key.block, "shard", t.key.index, "err", err)
	}
	shards, err := s.fetchShards(ctx, b, int(t.key.block), idx, newHolderView(s.aliveSet()))
	if err != nil {
		return nil, err
	}
	c, err := codec.New(int(b.DataShards), int(b.ParityShards))
	if err != nil {
		return nil, err
	}
	if err := s.coding(ctx, func() error { return c.Reconstruct(shards, int(blk.Len), []int{idx}) }); err != nil {
		return nil, fmt.Errorf("reconstruct: %w", err)
	}
	return shards[idx], nil
}

// target picks the agent for a rebuilt shard and reserves it for the
// block until release: a corrupt or lost copy is rewritten on its holder
// when that agent is alive, else the shard goes to the best-ranked alive
// agent that holds no shard of the block and is not taking another
// rebuilt shard of it.
func (r *repairer) target(b *pb.Blob, block, idx int, reason string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	node, err := r.pick(b, block, idx, reason)
	if err != nil {
		return "", err
	}
	br := blockRef{b.Id, uint32(block)}
	if r.placing[br] == nil {
		r.placing[br] = make(map[string]bool)
	}
	r.placing[br][node] = true
	return node, nil
}

// placingOn reports whether a worker is storing a rebuilt shard of block
// of blob on node and has not recorded it yet.
func (r *repairer) placingOn(node, blob string, block uint32) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.placing[blockRef{blob, block}][node]
}

// release drops the reservations of a batch's shards, once their holders
// are recorded (or they failed).
func (r *repairer) release(results []rebuilt) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, res := range results {
		br := blockRef{res.t.key.blob, res.t.key.block}
		if res.reserved == "" || r.placing[br] == nil {
			continue
		}
		delete(r.placing[br], res.reserved)
		if len(r.placing[br]) == 0 {
			delete(r.placing, br)
		}
	}
}

// pick is target's choice; r.mu is held.
func (r *repairer) pick(b *pb.Blob, block, idx int, reason string) (string, error) {
	blk := b.Blocks[block]
	members := r.s.members()
	current := b.Holder(blk, idx)
	holds := make(map[string]bool)
	for n := range r.placing[blockRef{b.Id, uint32(block)}] {
		holds[n] = true
	}
	zones := make(map[string]int)
	zoneOf := make(map[string]string)
	now := r.s.now()
	inPlace := false // the corrupt copy's own agent can take it again
	for _, m := range members {
		zoneOf[m.Name] = m.Zone
		if reason == reasonCorrupt && m.Alive && !m.Full && !m.Leaving && m.Name == current && !r.refusedSpace(current, now) {
			if r.inPlace[shardKey{b.Id, uint32(block), uint32(idx)}] < maxInPlace {
				return current, nil
			}
			inPlace = true
		}
	}
	alive := placeable(members)
	for i := range blk.Holders {
		if n := b.Holder(blk, i); n != "" && i != idx {
			holds[n] = true
			zones[zoneOf[n]]++
		}
	}
	var fallback string
	for _, n := range placement.Rank(blockKey(b.Id, block), alive) {
		if holds[n.ID] || n.ID == current || r.refusedSpace(n.ID, now) {
			continue
		}
		if zones[n.Zone] < max(int(b.ParityShards), 1) {
			return n.ID, nil
		}
		if fallback == "" {
			fallback = n.ID
		}
	}
	switch {
	case fallback != "":
		return fallback, nil
	case inPlace: // no other agent can take it: in place again
		return current, nil
	}
	return "", errNoTarget
}

// maxInPlace is how many rewrites of a corrupt copy on its own agent may
// fail in a row (a disk that fails writes too, not only reads) before
// repair places the shard on another agent that can take it.
const maxInPlace = 2
