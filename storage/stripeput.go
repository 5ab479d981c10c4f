package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/placement"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// A client-striped put is a put whose client (package client) encodes the
// blocks itself and streams each shard index straight to its agent:
//
//  1. BeginPut, on any agent, checks the header as Put does, announces the
//     put with a lease (BlobPending with lease_ttl; the leader's clock
//     sets its deadline) and answers the placement: the blob id, k+m, the
//     block size and the agent for each shard index.
//  2. WriteShards, on each target, takes one shard index of every block,
//     checks each shard (the client is not trusted) and stages it; when
//     the client closes its side the part is made durable with one fsync
//     and one rename.
//  3. RenewPut keeps the lease; the leader aborts the put once it passes.
//  4. CommitPut, on any agent, checks the whole metadata, asks every
//     named holder to confirm what it durably holds, and commits.
//
// Nothing is visible before the commit; an aborted put's shards are
// deleted on the alive agents and collected as orphans elsewhere.

// BeginPut announces a client-striped put of h and answers where its
// shards go. A blob of known size small enough to be stored inline is
// answered inline and nothing starts: the client sends it with Put.
// requestID, when set, identifies the BeginPut across retries: a repeat
// within the registry's dedup window answers the put the first attempt
// announced (its blob id, scheme and placement) and announces none.
func (s *Store) BeginPut(ctx context.Context, h *pb.BlobPutHeader, requestID string) (*pb.BeginPutResponse, error) {
	if _, err := s.checkPutHeader(h); err != nil {
		return nil, err
	}
	resp := &pb.BeginPutResponse{
		InlineMax: uint32(s.cfg.InlineMax), MaxMetadataBytes: uint64(s.cfg.MaxMetadataBytes),
		LeaseTtlMs: uint32(s.cfg.PutLease / time.Millisecond),
	}
	if h.Size > 0 && h.Size <= int64(s.cfg.InlineMax) {
		resp.Inline = true
		resp.Header = &pb.ResponseHeader{Revision: s.cluster.Meta().Revision()}
		return resp, nil
	}
	members, sc, err := s.scheme(ctx, h)
	if err != nil {
		return nil, err
	}
	pending := &pb.BlobPending{
		Id: newBlobID(), Name: h.Name, Node: s.cluster.Self(), Started: s.now().UnixNano(),
		LeaseTtl: int64(s.cfg.PutLease), Size: uint64(h.Size),
		DataShards: uint32(sc.K), ParityShards: uint32(sc.M), BlockSize: uint32(s.cfg.BlockSize),
		RequestId: requestID,
	}
	rev, err := s.cluster.Propose(ctx, &pb.Command{RequestId: requestID, Kind: &pb.Command_BlobPending{BlobPending: pending}})
	if err != nil {
		if requestID == "" {
			s.abort(pending.Id, nil) // in case it was applied after all
		} // else a retry with the same request id finds it, or its lease ends it
		return nil, fmt.Errorf("announce put of %q: %w", h.Name, err)
	}
	if requestID != "" {
		// rev is the first attempt's when this is a repeat.
		if pending, err = s.pendingOf(ctx, h.Name, requestID, rev); err != nil {
			return nil, err
		}
		sc = Scheme{K: int(pending.DataShards), M: int(pending.ParityShards)}
	}
	id := pending.Id
	resp.LeaseExpires = s.leaseExpires(ctx, id, rev)
	alive := placeable(members)
	// Shard i of every block goes where a coordinated put would put it.
	targets := (&put{id: id, sc: sc}).place(alive)
	addrs := s.addresses()
	taken := make(map[string]bool, len(targets))
	for _, t := range targets {
		resp.Targets = append(resp.Targets, &pb.AgentAddress{Node: t, Address: addrs[t]})
		taken[t] = true
	}
	for _, n := range placement.Rank(id, alive) {
		if !taken[n.ID] {
			resp.Spares = append(resp.Spares, &pb.AgentAddress{Node: n.ID, Address: addrs[n.ID]})
		}
	}
	resp.Header = &pb.ResponseHeader{Revision: rev}
	resp.BlobId = id
	resp.DataShards, resp.ParityShards, resp.BlockSize = uint32(sc.K), uint32(sc.M), pending.BlockSize
	return resp, nil
}

// pendingOf returns the put that the BeginPut of requestID announced at
// rev, as this replica holds it once it has applied rev.
func (s *Store) pendingOf(ctx context.Context, name, requestID string, rev uint64) (*pb.BlobPending, error) {
	if err := s.waitRevision(ctx, rev, replicaWait); err != nil {
		return nil, fmt.Errorf("%w: the put of %q was announced at revision %d, which this agent has not applied within %s; retry BeginPut with the same request id",
			ErrOutcomeUnknown, name, rev, replicaWait)
	}
	for _, p := range s.cluster.Meta().PendingBlobs() {
		if p.RequestId != requestID {
			continue
		}
		if p.Name != name {
			return nil, fmt.Errorf("%w: request_id: it began a put of blob %q, not %q; use a new request id for each put",
				ErrInvalidArgument, p.Name, name)
		}
		return p, nil
	}
	return nil, fmt.Errorf("%w: the put of %q this request id began (revision %d) is no longer in progress: it was committed, aborted or its lease expired; begin again with a new request id",
		ErrNotFound, name, rev)
}

// addresses maps each agent of the registry to its gRPC address.
func (s *Store) addresses() map[string]string {
	nodes := s.cluster.Meta().Nodes()
	out := make(map[string]string, len(nodes))
	for _, n := range nodes {
		out[n.Name] = n.GrpcAddress
	}
	return out
}

// RenewPut extends the lease of the client-striped put id of blob name and
// returns its new deadline (the leader's clock, unix ns) and the renewal's
// revision.
func (s *Store) RenewPut(ctx context.Context, name, id string) (int64, uint64, error) {
	if err := checkPutID(name, id); err != nil {
		return 0, 0, err
	}
	rev, err := s.cluster.Propose(ctx, &pb.Command{Kind: &pb.Command_BlobRenew{BlobRenew: &pb.BlobRenew{
		Id: id, Name: name, LeaseTtl: int64(s.cfg.PutLease),
	}}})
	if err != nil {
		return 0, 0, fmt.Errorf("renew put of %q: %w", name, err)
	}
	return s.leaseExpires(ctx, id, rev), rev, nil
}

// leaseExpires is the deadline of put id's lease as the entry at rev set
// it: the leader's, read from this replica once it has applied the entry,
// or an estimate on this agent's clock when the replica lags behind.
func (s *Store) leaseExpires(ctx context.Context, id string, rev uint64) int64 {
	if s.waitRevision(ctx, rev, replicaWait) == nil {
		if p := s.cluster.Meta().PendingBlob(id); p != nil {
			return p.LeaseExpires
		}
	}
	return s.now().Add(s.cfg.PutLease).UnixNano()
}

// AbortPut ends the client-striped put id of blob name without a blob and
// deletes its shards on the alive agents (best effort: orphan collection
// gets the rest). A put no longer pending is not an error, unless it was
// committed. It returns the abort's revision.
func (s *Store) AbortPut(ctx context.Context, name, id string) (uint64, error) {
	if err := checkPutID(name, id); err != nil {
		return 0, err
	}
	p, err := s.pendingPut(ctx, name, id)
	switch {
	case errors.Is(err, ErrNotFound):
		return s.cluster.Meta().Revision(), nil // aborted already
	case err != nil:
		return 0, err
	}
	rev, err := s.cluster.Propose(ctx, &pb.Command{Kind: &pb.Command_BlobAbort{BlobAbort: &pb.BlobAbort{Ids: []string{p.Id}}}})
	if err != nil {
		return 0, fmt.Errorf("abort put of %q: %w", name, err)
	}
	s.dropPutShards([]string{id}, rev)
	return rev, nil
}

// dropPutShards asks every alive agent, in the background, to delete the
// shards of the aborted client-striped puts ids: any agent may have been
// sent some.
func (s *Store) dropPutShards(ids []string, rev uint64) {
	var nodes []string
	for _, m := range s.members() {
		if m.Alive {
			nodes = append(nodes, m.Name)
		}
	}
	if !s.track() { // stopping: orphan collection deletes them
		return
	}
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		defer cancel()
		s.deleteShardsOn(ctx, nodes, ids, rev)
	}()
}

// checkPutID checks the name and blob id a striped put's call names.
func checkPutID(name, id string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if !ValidBlobID(id) {
		return fmt.Errorf("%w: blob id %q: want the 32 hex digits BeginPut answered", ErrInvalidArgument, id)
	}
	return nil
}

// pendingPut returns the client-striped put id of blob name. When this
// replica does not know it, it catches up with the leader first (the put
// may have begun through another agent a moment ago). A put not pending
// is ErrNotFound, one the replica lacks and cannot catch up on the
// catch-up's error (a stale read: it may well be pending); one pending
// under another name, or a coordinated put, ErrInvalidArgument.
func (s *Store) pendingPut(ctx context.Context, name, id string) (*pb.BlobPending, error) {
	meta := s.cluster.Meta()
	p := meta.PendingBlob(id)
	if p == nil {
		behind := s.catchUp(ctx)
		if p = meta.PendingBlob(id); p == nil && behind != nil {
			return nil, fmt.Errorf("put %s of blob %q is not in this agent's replica, which cannot tell whether it is in progress: %w", id, name, behind)
		}
	}
	switch {
	case p == nil:
		return nil, fmt.Errorf("%w: put %s of blob %q is not in progress: the put was aborted (lease expired?) or never begun; retry the put",
			ErrNotFound, id, name)
	case p.Name != name || p.LeaseExpires == 0:
		return nil, fmt.Errorf("%w: blob id %s is not a client-striped put of blob %q", ErrInvalidArgument, id, name)
	}
	return p, nil
}

// CommitPut makes a client-striped put's blob visible. It checks the
// metadata whole, then asks every agent it names as a holder (all at
// once, one call each) what it durably holds: a shard not confirmed with
// its checksum counts as missing, for repair to store, and a block left
// with fewer than need() shards refuses the commit (ErrNotEnoughShards).
// A commit of a put already committed answers its blob. requestID, when
// set, identifies the commit across the client's retries.
func (s *Store) CommitPut(ctx context.Context, req *pb.CommitPutRequest, requestID string) (*PutResult, error) {
	b := req.GetBlob()
	if b == nil {
		return nil, fmt.Errorf("%w: CommitPut needs the blob's metadata", ErrInvalidArgument)
	}
	if err := checkPutID(b.Name, b.Id); err != nil {
		return nil, err
	}
	if res, ok := s.alreadyCommitted(b); ok {
		return res, nil
	}
	p, err := s.pendingPut(ctx, b.Name, b.Id)
	if errors.Is(err, ErrNotFound) {
		if res, ok := s.alreadyCommitted(b); ok { // this replica was behind
			return res, nil
		}
	}
	if err != nil {
		return nil, err
	}
	old := s.cluster.Meta().Blob(b.Name)
	if old != nil && !req.Overwrite {
		return nil, fmt.Errorf("%w: blob %q; commit with overwrite to replace it", ErrAlreadyExists, b.Name)
	}
	if err := s.checkStripedBlob(b, p); err != nil {
		return nil, err
	}
	blob, missing, err := s.confirmHolders(ctx, b)
	if err != nil {
		return nil, err
	}
	if requestID == "" {
		requestID = s.cluster.Self() + "-commit-" + b.Id
	}
	rev, err := s.commitAs(ctx, blob, req.Overwrite, requestID)
	if err != nil {
		s.metrics.putsFailed.Inc()
		return nil, err
	}
	if old != nil && old.Id != blob.Id {
		s.dropShards(old, rev)
	}
	if missing > 0 {
		s.log.Warn("blob stored with missing shards; repair will store them", "blob", blob.Name, "missing", missing,
			"scheme", Scheme{K: int(blob.DataShards), M: int(blob.ParityShards)}.String())
		s.repair.nudge()
	}
	s.metrics.putBytes.Add(float64(blob.Size))
	return &PutResult{Blob: s.committed(ctx, blob, rev), Revision: rev, Missing: missing}, nil
}

// alreadyCommitted answers a retried commit: the blob of b's put, when it
// is committed under b's name.
func (s *Store) alreadyCommitted(b *pb.Blob) (*PutResult, bool) {
	done := s.cluster.Meta().BlobByID(b.Id)
	if done == nil || done.Name != b.Name {
		return nil, false
	}
	return &PutResult{Blob: done, Revision: done.CreateRevision}, true
}

// checkStripedBlob checks a client's metadata for the put p began:
// scheme, block size, size, every block's length, holders and checksums,
// the agents it names, the digest and the metadata bound.
func (s *Store) checkStripedBlob(b *pb.Blob, p *pb.BlobPending) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: blob %q: "+format, append([]any{ErrInvalidArgument, b.Name}, args...)...)
	}
	k, m, bs := b.DataShards, b.ParityShards, uint64(b.BlockSize)
	n := int(k) + int(m)
	schemeErr := checkScheme(k, m)
	switch {
	case k != p.DataShards || m != p.ParityShards || b.BlockSize != p.BlockSize:
		return bad("%d+%d shards of %d-byte blocks; the put began with %d+%d of %d", k, m, b.BlockSize, p.DataShards, p.ParityShards, p.BlockSize)
	case schemeErr != nil:
		return bad("%v", schemeErr)
	case bs < MinBlockSize || bs > MaxBlockSize:
		return bad("block size %d, must be between %d and %d", bs, MinBlockSize, MaxBlockSize)
	case len(b.Inline) > 0:
		return bad("a client-striped blob carries no inline bytes")
	case len(b.Sha256) != 32:
		return bad("sha256 has %d bytes, want 32", len(b.Sha256))
	case b.Size == 0 || b.Size > uint64(s.cfg.MaxBlobSize):
		return bad("size %d, must be 1 to the max blob size %d", b.Size, s.cfg.MaxBlobSize)
	case p.Size > 0 && b.Size != p.Size:
		return bad("size %d; the put began with size %d", b.Size, p.Size)
	}
	if want := (b.Size + bs - 1) / bs; uint64(len(b.Blocks)) != want {
		return bad("%d blocks; %d bytes in %d-byte blocks make %d", len(b.Blocks), b.Size, bs, want)
	}
	if err := s.checkNodes(b); err != nil {
		return err
	}
	sc := Scheme{K: int(k), M: int(m)}
	for i, blk := range b.Blocks {
		if want := min(b.Size-uint64(i)*bs, bs); uint64(blk.Len) != want {
			return bad("block %d holds %d bytes, want %d", i, blk.Len, want)
		}
		if len(blk.Holders) != n || len(blk.Sums) != n {
			return bad("block %d has %d holders and %d sums, want %d of each", i, len(blk.Holders), len(blk.Sums), n)
		}
		held := make(map[uint32]bool, n)
		for idx, h := range blk.Holders {
			switch {
			case h == 0:
				continue
			case int(h) > len(b.Nodes):
				return bad("block %d shard %d names agent %d of %d", i, idx, h, len(b.Nodes))
			case held[h]:
				return bad("block %d names agent %s for two shards", i, b.Nodes[h-1])
			}
			held[h] = true
		}
		if len(held) < sc.need() {
			return fmt.Errorf("%w: blob %q block %d: %d shards stored, need %d", ErrNotEnoughShards, b.Name, i, len(held), sc.need())
		}
	}
	if size := proto.Size(b); size > s.cfg.MaxMetadataBytes {
		return fmt.Errorf("%w: blob %q: its metadata is %d bytes, the limit is %d (one Raft entry): use a larger block size or fewer shards",
			ErrInvalidArgument, b.Name, size, s.cfg.MaxMetadataBytes)
	}
	return nil
}

// checkNodes checks that the agents b names are distinct agents of the
// cluster.
func (s *Store) checkNodes(b *pb.Blob) error {
	known := make(map[string]bool)
	for _, n := range s.cluster.Meta().Nodes() {
		known[n.Name] = true
	}
	seen := make(map[string]bool, len(b.Nodes))
	for _, n := range b.Nodes {
		switch {
		case !known[n]:
			return fmt.Errorf("%w: blob %q names agent %q, which is not an agent of this cluster", ErrInvalidArgument, b.Name, n)
		case seen[n]:
			return fmt.Errorf("%w: blob %q names agent %q twice in its nodes", ErrInvalidArgument, b.Name, n)
		}
		seen[n] = true
	}
	return nil
}

// confirmHolders asks each agent b names (all at once) what it durably
// holds of b, and returns a copy of b in which every shard not confirmed,
// with b's scheme, block size and checksum, has no holder, and how many
// shards that leaves missing. A block left with fewer than need() shards
// is ErrNotEnoughShards.
func (s *Store) confirmHolders(ctx context.Context, b *pb.Blob) (*pb.Blob, int, error) {
	indexes := make([][]uint32, len(b.Nodes)) // per node: the indexes it is named for
	named := make([]map[uint32]bool, len(b.Nodes))
	for _, blk := range b.Blocks {
		for idx, h := range blk.Holders {
			if h == 0 {
				continue
			}
			if named[h-1] == nil {
				named[h-1] = make(map[uint32]bool)
			}
			if !named[h-1][uint32(idx)] {
				named[h-1][uint32(idx)] = true
				indexes[h-1] = append(indexes[h-1], uint32(idx))
			}
		}
	}
	held := make([]map[uint32]*pb.HeldPart, len(b.Nodes))
	var wg sync.WaitGroup
	for i, node := range b.Nodes {
		if len(indexes[i]) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			parts, err := s.heldShards(ctx, node, b.Id, indexes[i])
			if err != nil {
				s.log.Warn("holder did not confirm its shards of a put; they count as missing", "blob", b.Name, "agent", node, "err", err)
				return
			}
			held[i] = make(map[uint32]*pb.HeldPart, len(parts))
			for _, p := range parts {
				held[i][p.Index] = p
			}
		}()
	}
	wg.Wait()
	out := proto.Clone(b).(*pb.Blob)
	need := Scheme{K: int(b.DataShards), M: int(b.ParityShards)}.need()
	missing := 0
	for bi, blk := range out.Blocks {
		stored := 0
		for idx, h := range blk.Holders {
			if h != 0 && confirmed(held[h-1][uint32(idx)], b, uint32(bi), blk.Sums[idx]) {
				stored++
				continue
			}
			blk.Holders[idx] = 0
			missing++
		}
		if stored < need {
			return nil, 0, fmt.Errorf("%w: blob %q block %d: %d of its shards are confirmed durable by their agents, need %d; retry the put",
				ErrNotEnoughShards, b.Name, bi, stored, need)
		}
	}
	return out, missing, nil
}

// confirmed reports whether part, what an agent holds of one shard index,
// holds block with checksum sum, laid out for b.
func confirmed(part *pb.HeldPart, b *pb.Blob, block, sum uint32) bool {
	if part == nil || part.DataShards != b.DataShards || part.ParityShards != b.ParityShards || part.BlockSize != b.BlockSize {
		return false
	}
	for i, hb := range part.Blocks {
		if hb == block {
			return i < len(part.Sums) && part.Sums[i] == sum
		}
	}
	return false
}

// heldShards asks node what it durably holds of shard indexes of blob id.
func (s *Store) heldShards(ctx context.Context, node, id string, indexes []uint32) ([]*pb.HeldPart, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShardTimeout)
	defer cancel()
	if node == s.cluster.Self() {
		return s.heldLocal(ctx, id, indexes)
	}
	peer, err := s.cluster.Shards(node, false)
	if err != nil {
		return nil, err
	}
	var resp *pb.HeldShardsResponse
	err = s.callPeer(ctx, node, func(ctx context.Context) (err error) {
		resp, err = peer.HeldShards(ctx, &pb.HeldShardsRequest{BlobId: id, Indexes: indexes})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("held shards of %s on %s: %w", id, node, apierr.FromStatus(err))
	}
	return resp.Parts, nil
}

// heldLocal lists what this agent durably holds of shard indexes of blob
// id, read from its part files within ctx (aside): a disk that hangs in
// reads would otherwise hold the put's commit, or the peer's call, and a
// goroutine, for as long as it hangs.
func (s *Store) heldLocal(ctx context.Context, id string, indexes []uint32) ([]*pb.HeldPart, error) {
	if len(indexes) > codec.MaxShards {
		return nil, fmt.Errorf("%w: indexes: %d shard indexes, a blob has at most %d", ErrInvalidArgument, len(indexes), codec.MaxShards)
	}
	var asked [codec.MaxShards]bool
	for _, idx := range indexes {
		if idx >= codec.MaxShards {
			return nil, fmt.Errorf("%w: shard index %d", ErrInvalidArgument, idx)
		}
		if asked[idx] {
			return nil, fmt.Errorf("%w: indexes: shard index %d is asked for twice", ErrInvalidArgument, idx)
		}
		asked[idx] = true
	}
	var out []*pb.HeldPart
	_, err := s.aside(ctx, errReadAbandoned, func() (int, error) {
		for _, idx := range indexes {
			h, err := s.shards.Held(id, uint16(idx))
			if errors.Is(err, shardstore.ErrNotFound) {
				continue
			}
			if err != nil {
				return 0, err
			}
			out = append(out, &pb.HeldPart{
				Index: idx, DataShards: uint32(h.K), ParityShards: uint32(h.M), BlockSize: h.BlockSize, Blocks: h.Blocks, Sums: h.Sums,
			})
		}
		return 0, nil
	}, nil)
	if errors.Is(err, errReadAbandoned) {
		return nil, fmt.Errorf("list the shards of %s on agent %s: its shard disk (%s) did not read them in time; it may hang in reads: "+
			"check that disk (dmesg, iostat), and restart the agent if it stays stuck: %w", id, s.cluster.Self(), s.shards.Dir(), err)
	}
	if err != nil {
		return nil, mapShardErr(err)
	}
	return out, nil
}

// HeldShards answers a peer's CommitPut: what this agent durably holds of
// a blob, read within ShardTimeout and the caller's deadline.
func (ss *ShardServer) HeldShards(ctx context.Context, req *pb.HeldShardsRequest) (*pb.HeldShardsResponse, error) {
	if !ValidBlobID(req.BlobId) {
		return nil, fmt.Errorf("%w: blob id %q", ErrInvalidArgument, req.BlobId)
	}
	ctx, cancel := context.WithTimeout(ctx, ss.s.cfg.ShardTimeout)
	defer cancel()
	parts, err := ss.s.heldLocal(ctx, req.BlobId, req.Indexes)
	if err != nil {
		return nil, err
	}
	return &pb.HeldShardsResponse{Parts: parts}, nil
}
