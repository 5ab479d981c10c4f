package raftstore

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// blobState is the blob metadata part of the FSM: committed blobs by name
// and by id, and puts in progress. Guarded by FSM.mu.
type blobState struct {
	byName  map[string]*pb.Blob
	byID    map[string]*pb.Blob
	pending map[string]*pb.BlobPending
}

func (b *blobState) reset() {
	b.byName = make(map[string]*pb.Blob)
	b.byID = make(map[string]*pb.Blob)
	b.pending = make(map[string]*pb.BlobPending)
}

func (b *blobState) put(blob *pb.Blob) {
	if old := b.byName[blob.Name]; old != nil {
		delete(b.byID, old.Id)
	}
	b.byName[blob.Name] = blob
	b.byID[blob.Id] = blob
}

// applyBlobPending records a put in progress. A lease (lease_ttl) runs
// from the entry's time, the leader's clock when it proposed it.
func (f *FSM) applyBlobPending(p *pb.BlobPending, now int64) error {
	if p.GetId() == "" || p.GetNode() == "" {
		return fmt.Errorf("%w: pending blob needs an id and a node", ErrInvalidArgument)
	}
	if p.LeaseTtl < 0 {
		return fmt.Errorf("%w: pending blob %s: negative lease %d", ErrInvalidArgument, p.Id, p.LeaseTtl)
	}
	if p.LeaseTtl > 0 {
		p.LeaseExpires = now + p.LeaseTtl
	}
	f.blobs.pending[p.Id] = p
	return nil
}

// applyBlobRenew extends the lease of a pending client-striped put to the
// entry's time plus the renewal's lease_ttl.
func (f *FSM) applyBlobRenew(r *pb.BlobRenew, now int64) error {
	p := f.blobs.pending[r.GetId()]
	if p == nil || p.Name != r.GetName() {
		return fmt.Errorf("%w: put %s of blob %q is not in progress: the put was aborted (lease expired?); retry the put",
			ErrNotFound, r.GetId(), r.GetName())
	}
	if p.LeaseExpires == 0 || r.LeaseTtl <= 0 {
		return fmt.Errorf("%w: put %s of blob %q has no lease to renew, or the renewal no length (%d)",
			ErrInvalidArgument, r.GetId(), r.GetName(), r.LeaseTtl)
	}
	renewed := proto.Clone(p).(*pb.BlobPending)
	renewed.LeaseExpires = max(p.LeaseExpires, now+r.LeaseTtl)
	f.blobs.pending[p.Id] = renewed
	return nil
}

func (f *FSM) applyBlobCommit(c *pb.BlobCommit, now int64, rev uint64) error {
	in := c.GetBlob()
	if in.GetName() == "" || in.GetId() == "" {
		return fmt.Errorf("%w: blob needs a name and an id", ErrInvalidArgument)
	}
	if err := checkBlobShape(in); err != nil {
		return err
	}
	for i := range in.Blocks {
		if err := checkDistinctHolders(in, i, nil); err != nil {
			return err
		}
	}
	if old := f.blobs.byName[in.Name]; old != nil && !c.Overwrite {
		return fmt.Errorf("%w: blob %q (stored at revision %d); overwrite it explicitly or choose another name",
			ErrAlreadyExists, in.Name, old.CreateRevision)
	}
	if _, ok := f.blobs.byID[in.Id]; ok {
		return fmt.Errorf("%w: blob id %s is already committed", ErrAlreadyExists, in.Id)
	}
	// A blob with shards commits only while its put is pending: once the
	// put is aborted, agents may already be collecting its shards.
	p := f.blobs.pending[in.Id]
	if len(in.Blocks) > 0 && p == nil {
		return fmt.Errorf("%w: put %s of blob %q was aborted (its agent was thought failed, or it ran too long); retry the put",
			ErrNotFound, in.Id, in.Name)
	}
	// A client-striped put commits only under the name it began with:
	// the permission to write that name is what let it write the shards.
	if p != nil && p.LeaseExpires != 0 && p.Name != in.Name {
		return fmt.Errorf("%w: put %s began for blob %q, not %q", ErrInvalidArgument, in.Id, p.Name, in.Name)
	}
	blob := proto.Clone(in).(*pb.Blob)
	blob.Created = now
	blob.CreateRevision = rev
	blob.ModRevision = rev
	f.blobs.put(blob)
	delete(f.blobs.pending, blob.Id)
	return nil
}

// checkBlobShape rejects metadata whose blocks do not match its scheme, so
// that readers can index holders and sums without checking.
func checkBlobShape(b *pb.Blob) error {
	n := int(b.DataShards + b.ParityShards)
	if len(b.Blocks) > 0 && (b.DataShards == 0 || n > 256) {
		return fmt.Errorf("%w: blob %q has %d+%d shards per block", ErrInvalidArgument, b.Name, b.DataShards, b.ParityShards)
	}
	var total uint64
	for i, blk := range b.Blocks {
		if len(blk.Holders) != n || len(blk.Sums) != n {
			return fmt.Errorf("%w: blob %q block %d has %d holders and %d sums, want %d",
				ErrInvalidArgument, b.Name, i, len(blk.Holders), len(blk.Sums), n)
		}
		for _, h := range blk.Holders {
			if int(h) > len(b.Nodes) {
				return fmt.Errorf("%w: blob %q block %d names node %d of %d", ErrInvalidArgument, b.Name, i, h, len(b.Nodes))
			}
		}
		total += uint64(blk.Len)
	}
	if len(b.Blocks) > 0 && total != b.Size {
		return fmt.Errorf("%w: blob %q blocks hold %d bytes, size says %d", ErrInvalidArgument, b.Name, total, b.Size)
	}
	if len(b.Blocks) == 0 && uint64(len(b.Inline)) != b.Size {
		return fmt.Errorf("%w: blob %q inline holds %d bytes, size says %d", ErrInvalidArgument, b.Name, len(b.Inline), b.Size)
	}
	return nil
}

// checkDistinctHolders rejects a block of b that has two shards on one agent:
// losing that agent would lose both. With only non-nil, just the agents in
// only are checked, so that a repair is judged by what it places and not
// refused over an older block it does not touch.
func checkDistinctHolders(b *pb.Blob, block int, only map[string]bool) error {
	blk := b.Blocks[block]
	seen := make(map[string]int, len(blk.Holders))
	for i := range blk.Holders {
		node := b.Holder(blk, i)
		if node == "" || (only != nil && !only[node]) {
			continue
		}
		if first, ok := seen[node]; ok {
			return fmt.Errorf("%w: blob %q block %d would hold shards %d and %d on the same agent %s",
				ErrInvalidArgument, b.Name, block, first, i, node)
		}
		seen[node] = i
	}
	return nil
}

func (f *FSM) applyBlobAbort(ids []string) {
	for _, id := range ids {
		delete(f.blobs.pending, id)
	}
}

func (f *FSM) applyBlobDelete(name string) error {
	old := f.blobs.byName[name]
	if old == nil {
		return fmt.Errorf("%w: blob %q", ErrNotFound, name)
	}
	delete(f.blobs.byName, name)
	delete(f.blobs.byID, old.Id)
	return nil
}

func (f *FSM) applyBlobShards(c *pb.BlobShards, rev uint64) error {
	old := f.blobs.byID[c.GetId()]
	if old == nil {
		return fmt.Errorf("%w: blob id %s (deleted or overwritten)", ErrNotFound, c.GetId())
	}
	n := old.DataShards + old.ParityShards
	for _, s := range c.Shards {
		if int(s.Block) >= len(old.Blocks) || s.Index >= n || s.Node == "" {
			return fmt.Errorf("%w: shard %d/%d of blob %q does not exist", ErrInvalidArgument, s.Block, s.Index, old.Name)
		}
	}
	blob := proto.Clone(old).(*pb.Blob)
	placed := make(map[uint32]map[string]bool) // block -> agents placed there
	var blocks []uint32                        // in command order, for a deterministic error
	for _, s := range c.Shards {
		blk := blob.Blocks[s.Block]
		blk.Holders[s.Index] = blob.HolderRef(s.Node)
		blk.Sums[s.Index] = s.Sum
		if placed[s.Block] == nil {
			placed[s.Block] = make(map[string]bool)
			blocks = append(blocks, s.Block)
		}
		placed[s.Block][s.Node] = true
	}
	// Checked on the copy: a rejected command leaves the stored blob as it was.
	for _, block := range blocks {
		if err := checkDistinctHolders(blob, int(block), placed[block]); err != nil {
			return err
		}
	}
	blob.ModRevision = rev
	f.blobs.put(blob)
	return nil
}

// Blob returns the committed blob called name, or nil.
func (f *FSM) Blob(name string) *pb.Blob {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.blobs.byName[name]
}

// BlobByID returns the committed blob whose put had this id, or nil.
func (f *FSM) BlobByID(id string) *pb.Blob {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.blobs.byID[id]
}

// Blobs returns the committed blobs whose names start with prefix, sorted
// by name, and the revision they reflect.
func (f *FSM) Blobs(prefix string) ([]*pb.Blob, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*pb.Blob
	for name, b := range f.blobs.byName {
		if strings.HasPrefix(name, prefix) {
			out = append(out, b)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, f.revision
}

// BlobCount returns how many blobs are committed.
func (f *FSM) BlobCount() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.blobs.byName)
}

// PendingBlob returns the put in progress with this id, or nil.
func (f *FSM) PendingBlob(id string) *pb.BlobPending {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.blobs.pending[id]
}

// PendingBlobs returns the puts in progress sorted by id.
func (f *FSM) PendingBlobs() []*pb.BlobPending {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*pb.BlobPending, 0, len(f.blobs.pending))
	for _, p := range f.blobs.pending {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out
}
