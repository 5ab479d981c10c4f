package storage

import (
	"context"
	"fmt"
	"math"
	"strconv"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/placement"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// Scheme is a blob's erasure coding: K data and M parity shards per block.
type Scheme struct{ K, M int }

func (sc Scheme) String() string { return strconv.Itoa(sc.K) + "+" + strconv.Itoa(sc.M) }

// need is how many shards of a block a put must store: k+1, so that one
// more failure still leaves the block readable (k when there is no parity).
func (sc Scheme) need() int {
	if sc.M == 0 {
		return sc.K
	}
	return sc.K + 1
}

// chooseScheme picks k+m for a put and checks it against the agents alive.
// The default comes from the cluster's size, alive or not, so that a blob
// written while an agent is down keeps the cluster's durability: its missing
// shards are stored by repair. When too few agents are alive to store k+1
// shards of it, the default keeps its m with fewer data shards, all of them
// stored at once (three agents with one down: 1+1 rather than no put at
// all; the blob costs more space, not less safety). An explicit k+m larger
// than the alive agents is refused unless the caller asked for best effort.
func chooseScheme(h *pb.BlobPutHeader, members []Member) (Scheme, error) {
	alive := len(placeable(members))
	full, roomless := "", aliveMembers(members)-alive // alive, leaving, with full shard stores or too little room
	short, leaving := 0, 0
	for _, m := range members {
		switch {
		case m.Alive && m.Leaving:
			leaving++
		case m.Alive && m.Short && !m.Full:
			short++
		}
	}
	if roomless -= leaving; roomless > 0 {
		what := "full shard stores, or too little room for this blob's part"
		if short == roomless {
			what = "too little room in their shard stores for this blob's part"
		}
		full = fmt.Sprintf(" (%d more alive with %s: free space there, raise their --shard-max-bytes, delete blobs or add agents)", roomless, what)
	}
	if leaving > 0 {
		full += fmt.Sprintf(" (%d more alive and leaving the cluster: they take no new shard)", leaving)
	}
	var sc Scheme
	explicit := h.DataShards != 0 || h.ParityShards != 0
	if explicit {
		sc = Scheme{K: int(h.DataShards), M: int(h.ParityShards)}
		if err := checkScheme(h.DataShards, h.ParityShards); err != nil {
			return sc, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
		}
		if sc.K+sc.M > alive && !h.BestEffort {
			return sc, fmt.Errorf("%w: %s shards need %d distinct agents, %d of %d are alive with room%s; use fewer shards, or best effort to let repair store the rest later",
				ErrNotEnoughShards, sc, sc.K+sc.M, alive, len(members), full)
		}
	} else {
		k, m := placement.DefaultScheme(len(members))
		sc = Scheme{K: k, M: m}
		if alive < sc.need() && m > 0 && alive-m >= 1 {
			sc = Scheme{K: alive - m, M: m}
		}
	}
	if alive < sc.need() {
		refusal, remedy := error(ErrNotEnoughShards), "; retry when agents are back or choose fewer shards"
		if alive+roomless >= sc.need() {
			// Refused for want of room: it says so with ErrNoSpace too, and
			// more space, not more agents alive, is the remedy.
			refusal, remedy = fmt.Errorf("%w: %w", ErrNotEnoughShards, apierr.ErrNoSpace), ""
		}
		return sc, fmt.Errorf("%w: a %s blob needs at least %d shards stored per block, only %d of %d agents are alive with room%s%s",
			refusal, sc, sc.need(), alive, len(members), full, remedy)
	}
	return sc, nil
}

// shardsPerBlock is k+m a put would use, for the metadata bound before any
// agent is asked: the explicit scheme, or the cluster size's default.
func shardsPerBlock(h *pb.BlobPutHeader, members []Member) int {
	if h.DataShards != 0 || h.ParityShards != 0 {
		return int(h.DataShards + h.ParityShards)
	}
	k, m := placement.DefaultScheme(len(members))
	return k + m
}

// scheme returns the members a put places its shards on and its k+m, once
// the registry knows the agents gossip sees (awaitMembers).
func (s *Store) scheme(ctx context.Context, h *pb.BlobPutHeader) ([]Member, Scheme, error) {
	members, forming := s.awaitMembers(ctx)
	sc, err := chooseScheme(h, members)
	if err == nil && h.Size > 0 {
		// Agents without room for one part of this blob would fail it
		// part way (their shards lost, the put with them): leave them out,
		// and let the scheme see what is left.
		if short, n := withRoomFor(members, shardstore.PartBytes(h.Size, s.cfg.BlockSize, sc.K)); n > 0 {
			members = short
			sc, err = chooseScheme(h, members)
		}
	}
	if err != nil && forming {
		err = fmt.Errorf("%w: the cluster is still forming: gossip sees %d agents alive, the registry has recorded %d of them so far; retry in a moment (%v)",
			ErrNotEnoughShards, s.cluster.GossipAlive(), aliveMembers(members), err)
	}
	return members, sc, err
}

// withRoomFor returns members with Short set on those that announce less
// room than need bytes, and how many those are.
func withRoomFor(members []Member, need int64) ([]Member, int) {
	out := make([]Member, len(members))
	n := 0
	for i, m := range members {
		if m.Room > 0 && m.Room < need {
			m.Short = true
			n++
		}
		out[i] = m
	}
	return out, n
}

// checkScheme checks a k+m that comes as two uint32 fields (a peer's
// shard, a client's striped put or commit), each on its own before their
// sum: a sum that wraps (258 + 0xFFFFFF00 = 2) would pass, and a part
// file keeps each in a byte, so a field past 255 would store a scheme
// nobody declared.
func checkScheme(k, m uint32) error {
	switch {
	case k == 0 || k > math.MaxUint8:
		return fmt.Errorf("data_shards %d: want 1 to %d", k, math.MaxUint8)
	case m > math.MaxUint8:
		return fmt.Errorf("parity_shards %d: want 0 to %d", m, math.MaxUint8)
	case k+m > codec.MaxShards:
		return fmt.Errorf("data_shards %d + parity_shards %d = %d shards in a block, at most %d", k, m, k+m, codec.MaxShards)
	}
	return nil
}
