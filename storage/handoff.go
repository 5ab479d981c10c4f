package storage

import (
	"context"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/storage/codec"
)

// An agent that leaves the cluster for good first hands its shards off, as
// HDFS decommissions a datanode: it announces that it is leaving (its
// agent's gossip meta, Member.Leaving), takes no new shard, and the
// leader's repair copies each shard it holds to another agent (reason
// node-leaving) and records the new holder. Leaving at once would take
// its shards away before repair rebuilt them, and one more lost disk
// within the repair delay would then exceed a blob's parity.

// Handoff is what a leaving agent still holds of the blobs.
type Handoff struct {
	// Shards are the shards the metadata places on this agent, Bytes
	// their size.
	Shards int
	Bytes  int64
	// Stuck counts those of Shards that no agent can take now: every
	// alive agent that stays and has room holds a shard of their block.
	Stuck int
}

// Left is how many shards still have to move before the agent can go.
func (h Handoff) Left() int { return h.Shards - h.Stuck }

// Handoff counts the shards this agent holds, as its replica of the
// metadata places them.
func (s *Store) Handoff() Handoff {
	self := s.cluster.Self()
	open := make(map[string]bool)
	for _, n := range placeable(s.members()) {
		open[n.ID] = true
	}
	delete(open, self) // before it announces that it leaves, it is placeable

	var h Handoff
	blobs, _ := s.cluster.Meta().Blobs("")
	for _, b := range blobs {
		for _, blk := range b.Blocks {
			mine, free := 0, len(open)
			for idx := range blk.Holders {
				switch n := b.Holder(blk, idx); {
				case n == self:
					mine++
				case open[n]:
					free--
				}
			}
			if mine == 0 {
				continue
			}
			h.Shards += mine
			h.Bytes += int64(mine * codec.ShardLen(int(blk.Len), int(b.DataShards)))
			h.Stuck += max(mine-max(free, 0), 0)
		}
	}
	return h
}

// CurrentHandoff is Handoff once this replica has applied what the leader
// has committed (a blob just put may not have reached it yet); with no
// leader to ask, or a replica that does not catch up in time, it is
// Handoff as the replica stands, and the error says why.
func (s *Store) CurrentHandoff(ctx context.Context) (Handoff, error) {
	err := s.catchUp(ctx)
	return s.Handoff(), err
}

// RequestRepairScan asks the leader to scan for shards to repair now
// rather than at its next RepairInterval: a leaving agent's shards move
// at once.
func (s *Store) RequestRepairScan(ctx context.Context) error {
	return s.cluster.Leader().ReportShards(ctx, &pb.ReportShardsRequest{Reporter: s.cluster.Self()})
}
