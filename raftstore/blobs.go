package raftstore

import (
	"fmt"
	"iter"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// blobState is the blob metadata part of the FSM: committed blobs by name
// and by id, and puts in progress. Guarded by FSM.mu.
type blobState struct {
	byName  map[string]*pb.Blob
	byID    map[string]*pb.Blob
	pending map[string]*pb.BlobPending
	// names orders byName's keys, for listing the blobs a page at a time.
	names *nameIndex
}

func (b *blobState) reset() {
	b.byName = make(map[string]*pb.Blob)
	b.byID = make(map[string]*pb.Blob)
	b.pending = make(map[string]*pb.BlobPending)
	b.names = &nameIndex{}
}

func (b *blobState) put(blob *pb.Blob) {
	if old := b.byName[blob.Name]; old != nil {
		delete(b.byID, old.Id)
	} else {
		b.names.add(blob.Name)
	}
	b.byName[blob.Name] = blob
	b.byID[blob.Id] = blob
}

func (b *blobState) delete(name string) {
	if old := b.byName[name]; old != nil {
		delete(b.byName, name)
		delete(b.byID, old.Id)
		b.names.remove(name)
	}
}

// nameIndex holds the names of the committed blobs in order, in chunks of
// at most chunkNames, so that adding or removing one moves at most that
// many. The first reader that needs it sorts the names (a restore loads
// blobs in any order: sorting once is cheaper than inserting each in its
// place); from then on apply keeps it in order.
//
// Apply changes it under FSM.mu's write lock; a reader builds it under
// FSM.mu's read lock with mu held, and once built only reads it.
type nameIndex struct {
	mu     sync.Mutex
	built  bool
	chunks [][]string // in order, each sorted and not empty
}

// chunkNames bounds the names of one chunk of a nameIndex.
const chunkNames = 512

// find returns the chunk that holds name, or would: the first whose last
// name is not below it (len(chunks) when there is none).
func (x *nameIndex) find(name string) int {
	return sort.Search(len(x.chunks), func(c int) bool {
		ch := x.chunks[c]
		return ch[len(ch)-1] >= name
	})
}

// add inserts name, not yet in the index; a chunk grown past chunkNames
// is split in two.
func (x *nameIndex) add(name string) {
	if !x.built {
		return
	}
	if len(x.chunks) == 0 {
		x.chunks = [][]string{{name}}
		return
	}
	c := min(x.find(name), len(x.chunks)-1)
	i, _ := slices.BinarySearch(x.chunks[c], name)
	ch := slices.Insert(x.chunks[c], i, name)
	if len(ch) > chunkNames {
		half := len(ch) / 2
		x.chunks = slices.Insert(x.chunks, c+1, slices.Clone(ch[half:]))
		clear(ch[half:])
		ch = ch[:half]
	}
	x.chunks[c] = ch
}

// remove removes name; a chunk left empty is dropped.
func (x *nameIndex) remove(name string) {
	if !x.built {
		return
	}
	c := x.find(name)
	if c == len(x.chunks) {
		return
	}
	i, ok := slices.BinarySearch(x.chunks[c], name)
	if !ok {
		return
	}
	if ch := slices.Delete(x.chunks[c], i, i+1); len(ch) > 0 {
		x.chunks[c] = ch
	} else {
		x.chunks = slices.Delete(x.chunks, c, c+1)
	}
}

// ready builds the index of byName's names when needed. The caller holds
// FSM.mu's read lock.
func (x *nameIndex) ready(byName map[string]*pb.Blob) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.built {
		return
	}
	names := slices.Sorted(maps.Keys(byName))
	x.chunks = nil
	for len(names) > 0 {
		n := min(len(names), chunkNames/2)
		x.chunks = append(x.chunks, names[:n:n])
		names = names[n:]
	}
	x.built = true
}

// from yields the names not below name, in order.
func (x *nameIndex) from(name string) iter.Seq[string] {
	return func(yield func(string) bool) {
		c := x.find(name)
		if c == len(x.chunks) {
			return
		}
		i, _ := slices.BinarySearch(x.chunks[c], name)
		for _, ch := range x.chunks[c:] {
			for _, n := range ch[i:] {
				if !yield(n) {
					return
				}
			}
			i = 0
		}
	}
}

// count returns how many names start with prefix, counting whole chunks
// where it can.
func (x *nameIndex) count(prefix string) int {
	c := x.find(prefix)
	if c == len(x.chunks) {
		return 0
	}
	i, _ := slices.BinarySearch(x.chunks[c], prefix)
	n := 0
	for _, ch := range x.chunks[c:] {
		if strings.HasPrefix(ch[len(ch)-1], prefix) {
			n += len(ch) - i
			i = 0
			continue
		}
		rest := ch[i:]
		return n + sort.Search(len(rest), func(j int) bool { return !strings.HasPrefix(rest[j], prefix) })
	}
	return n
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
// that readers can index holders and sums without checking. The shards
// are counted in int: their uint32 sum could wrap around to a small count.
func checkBlobShape(b *pb.Blob) error {
	n := int(b.DataShards) + int(b.ParityShards)
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
	if f.blobs.byName[name] == nil {
		return fmt.Errorf("%w: blob %q", ErrNotFound, name)
	}
	f.blobs.delete(name)
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
	page, _, rev := f.BlobsPage(prefix, "", math.MaxInt, nil)
	return page, rev
}

// BlobsPage returns one page of the committed blobs whose names start
// with prefix, in name order: the first limit of those after the name
// after ("": from the first) that keep accepts. total counts all those
// under prefix that keep accepts, and rev is the revision they reflect.
// keep is asked about every blob under prefix once, in name order (nil
// accepts all); it runs under the replica's read lock and must not call
// the replica.
func (f *FSM) BlobsPage(prefix, after string, limit int, keep func(name string) bool) (page []*pb.Blob, total int, rev uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	names := f.blobs.names
	names.ready(f.blobs.byName)
	if keep == nil {
		total = names.count(prefix)
		page = make([]*pb.Blob, 0, min(max(limit, 0), total))
		for name := range names.from(max(prefix, after)) {
			if name == after {
				continue
			}
			if len(page) >= limit || !strings.HasPrefix(name, prefix) {
				break
			}
			page = append(page, f.blobs.byName[name])
		}
		return page, total, f.revision
	}
	for name := range names.from(prefix) {
		if !strings.HasPrefix(name, prefix) {
			break
		}
		if !keep(name) {
			continue
		}
		total++
		if name > after && len(page) < limit {
			page = append(page, f.blobs.byName[name])
		}
	}
	return page, total, f.revision
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
