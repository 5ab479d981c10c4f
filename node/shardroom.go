package node

import (
	"context"
	"math/bits"
	"time"
)

// An agent whose shard store cannot take another block's shard (its disk
// is full, or shard_max_bytes is reached) says so in its gossip meta, and
// the blob store places no new shard on it, for puts or repair: a put
// would otherwise lose the shards sent to it and fail, or leave its blob
// degraded, and repair would retry it at every scan. It keeps serving the
// shards it holds. It also announces the room it has left, rounded down
// to a power of two: a put of known size places no part on an agent
// without room for the whole part (a 100 MB blob as 2+1 needs ~50 MB on
// each of its three agents), which would otherwise fail part way, and
// fail again at the next put placed there. The agent checks its room
// every shardRoomInterval and announces a change at once.

// shardRoomInterval is how often the agent checks the room left in its
// shard store.
const shardRoomInterval = 5 * time.Second

// checkShardRoom records whether the shard store has room for another
// block's shard, and its room rounded down to a power of two, and
// reports whether either changed.
func (n *Node) checkShardRoom() bool {
	room, err := n.blobs.Shards().Room()
	if err != nil {
		n.log.Debug("could not tell the shard store's room", "err", err)
		return false
	}
	class := roomClass(room)
	roomChanged := n.shardRoom.Swap(class) != class
	full := room < int64(n.cfg.BlobBlockSize)
	if n.shardsFull.Swap(full) == full {
		return roomChanged
	}
	if full {
		n.log.Warn("this agent's shard store is full: new blob shards go to other agents until space is freed on its disk or shard_max_bytes is raised",
			"room_bytes", room, "block_size", n.cfg.BlobBlockSize, "shard_max_bytes", n.cfg.ShardMaxBytes)
	} else {
		n.log.Info("this agent's shard store has room again: it takes new blob shards", "room_bytes", room)
	}
	return true
}

// roomClass is room rounded down to a power of two: what the agent
// announces, so that it changes a few dozen times over a disk's life
// rather than with every put.
func roomClass(room int64) int64 {
	if room <= 0 {
		return 0
	}
	return int64(1) << (bits.Len64(uint64(room)) - 1)
}

// watchShardRoom checks the shard store's room until ctx ends and tells
// the other agents by gossip when it changes.
func (n *Node) watchShardRoom(ctx context.Context) {
	t := time.NewTicker(shardRoomInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !n.checkShardRoom() {
			continue
		}
		if g := n.gossip(); g != nil {
			if err := g.UpdateMetaFrom(n.selfMeta); err != nil && ctx.Err() == nil {
				n.log.Warn("could not announce the shard store's room by gossip", "err", err)
			}
		}
	}
}
