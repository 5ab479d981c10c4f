package storage

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/bufpool"
	"github.com/zrpcio/zrpc/internal/wirecodec"
	"github.com/zrpcio/zrpc/storage/codec"
)

// chunkSize is the most bytes one Get response message carries.
const chunkSize = 256 << 10

// lookup returns the blob called name once this replica has applied
// minRev (waiting up to two seconds for it), read with consistency c (see
// BlobGetRequest): a blob this replica lacks is "not found" only when the
// replica can vouch for it.
func (s *Store) lookup(ctx context.Context, name string, minRev uint64, c pb.Consistency) (*pb.Blob, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if err := validConsistency(c); err != nil {
		return nil, err
	}
	meta := s.cluster.Meta()
	if minRev > 0 {
		s.waitRevision(ctx, minRev, 2*time.Second)
	}
	if c == pb.Consistency_CONSISTENT {
		if err := s.catchUp(ctx); err != nil {
			return nil, fmt.Errorf("blob %q: %w", name, err)
		}
	}
	b := meta.Blob(name)
	if b == nil && c == pb.Consistency_DEFAULT {
		// Perhaps just written through another agent, or this agent has
		// just restarted and is replaying its log.
		if err := s.current(ctx); err != nil {
			return nil, fmt.Errorf("blob %q is not in this agent's replica, which cannot tell whether it exists: %w", name, err)
		}
		b = meta.Blob(name)
	}
	if b == nil {
		return nil, fmt.Errorf("%w: blob %q", ErrNotFound, name)
	}
	return b, nil
}

// Summary returns b without its inline bytes and block table: what a
// reader needs to know before the bytes.
func Summary(b *pb.Blob) *pb.Blob {
	return &pb.Blob{
		Name: b.Name, Id: b.Id, Size: b.Size, DataShards: b.DataShards, ParityShards: b.ParityShards,
		BlockSize: b.BlockSize, Sha256: b.Sha256, Created: b.Created,
		CreateRevision: b.CreateRevision, ModRevision: b.ModRevision,
	}
}

// Get streams bytes [offset, offset+length) of the blob called name to
// send, in order. The first message carries the blob's Summary. Only the
// blocks the range touches are read; each block reads its data shards
// first and decodes from parity only when some are missing or corrupt. At
// most readAhead+1 blocks are held in memory whatever the blob's size.
func (s *Store) Get(ctx context.Context, req *pb.BlobGetRequest, send func(*pb.BlobGetResponse) error) error {
	b, err := s.lookup(ctx, req.GetName(), req.GetMinRevision(), req.GetConsistency())
	if err != nil {
		return err
	}
	end, err := readRange(b, req.Offset, req.Length)
	if err != nil {
		return err
	}
	if err := send(&pb.BlobGetResponse{Blob: Summary(b)}); err != nil {
		return err
	}
	if len(b.Blocks) == 0 {
		return sendChunks(b.Inline[req.Offset:end], send)
	}
	if req.Offset == end {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bs := uint64(b.BlockSize)
	first, last := int(req.Offset/bs), int((end-1)/bs)
	blocks := s.prefetch(ctx, b, first, last)
	for i := first; i <= last; i++ {
		ch, ok := <-blocks
		if !ok {
			return ctx.Err()
		}
		r := <-ch
		if r.err != nil {
			return r.err
		}
		start := uint64(i) * bs
		lo, hi := max(req.Offset, start)-start, min(end, start+uint64(r.n))-start
		err := sendLent(r.buf, r.buf.Bytes()[lo:hi], send)
		s.metrics.getBytes.Add(float64(hi - lo))
		r.buf.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

// readRange checks the range [offset, offset+length) asked of b (length 0:
// to the end) and returns where it ends, capped at b's size. The range is
// checked before any arithmetic on it: an offset past the end, or a length
// that would wrap around or go negative as a signed size, is
// InvalidArgument naming the field.
func readRange(b *pb.Blob, offset, length uint64) (end uint64, err error) {
	switch {
	case offset > b.Size:
		return 0, fmt.Errorf("%w: offset %d is past the end of blob %q (%d bytes)", ErrInvalidArgument, offset, b.Name, b.Size)
	case length > math.MaxInt64:
		return 0, fmt.Errorf("%w: length %d is larger than any blob (at most %d bytes; 0 reads to the end)",
			ErrInvalidArgument, length, uint64(math.MaxInt64))
	}
	if length == 0 || length >= b.Size-offset {
		return b.Size, nil
	}
	return offset + length, nil
}

// sendChunks sends data in chunks, each copied into its message.
func sendChunks(data []byte, send func(*pb.BlobGetResponse) error) error {
	return sendLent(nil, data, send)
}

// sendLent sends data, which lies in buf (nil: data is copied), in
// chunks that gRPC writes by reference: each chunk holds a loan of buf
// until gRPC has written it, after send has returned.
func sendLent(buf *bufpool.Shared, data []byte, send func(*pb.BlobGetResponse) error) error {
	for len(data) > 0 {
		n := min(len(data), chunkSize)
		msg := &pb.BlobGetResponse{Chunk: data[:n:n]}
		reclaim := func() {}
		if buf != nil {
			reclaim = wirecodec.Lend(msg, "chunk", buf.Lend())
		}
		err := send(msg)
		reclaim()
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// readBlock is a block read for a get: its bytes are buf.Bytes()[:n].
type readBlock struct {
	buf *bufpool.Shared
	n   int
	err error
}

// readAhead is how many blocks a get fetches ahead of the one it sends.
const readAhead = 4

// prefetch fetches blocks first..last, up to readAhead at once, and hands
// them over in order: the reader takes the next channel from the queue
// and waits on it.
func (s *Store) prefetch(ctx context.Context, b *pb.Blob, first, last int) <-chan chan readBlock {
	queue := make(chan chan readBlock, readAhead-1)
	if !s.track() {
		ch := make(chan readBlock, 1)
		ch <- readBlock{err: errClosed}
		queue <- ch
		close(queue)
		return queue
	}
	go func() {
		defer s.wg.Done()
		defer close(queue)
		c, err := codec.New(int(b.DataShards), int(b.ParityShards))
		view := newHolderView(s.aliveSet())
		for i := first; i <= last; i++ {
			ch := make(chan readBlock, 1)
			select {
			case queue <- ch:
			case <-ctx.Done():
				return
			}
			if err != nil {
				ch <- readBlock{err: err}
				return
			}
			s.wg.Add(1) // within the tracked goroutine: Close waits for it still
			go func() {
				defer s.wg.Done()
				var r readBlock
				r.buf, r.n, r.err = s.readBlock(ctx, b, c, i, view)
				ch <- r
			}()
		}
	}()
	return queue
}

// readBlock reads and decodes block i of b into a pooled buffer, the
// caller's to release. The data shards this agent holds are read straight
// into their place in it, so decoding does not copy them.
//
// A read of this agent's files given up on (its disk lagged or hung) may
// still write into its place in the buffer: the block is then decoded
// into a buffer of its own, and the first goes back to the pool once
// that read ends (its loan).
func (s *Store) readBlock(ctx context.Context, b *pb.Blob, c *codec.Codec, i int, view *holderView) (*bufpool.Shared, int, error) {
	blk := b.Blocks[i]
	size := c.K() * codec.ShardLen(int(b.BlockSize), c.K())
	read := bufpool.NewShared(size) // the data shards this agent holds are read into
	shards, err := s.fetchShardsInto(ctx, b, i, -1, view, read.Bytes(), read.Lend)
	if err != nil {
		read.Release()
		return nil, 0, err
	}
	buf := read      // decoded into
	if read.Lent() { // a read into it goes on
		defer read.Release() // after decoding the shards read into it
		buf = bufpool.NewShared(size)
	}
	var reconstructed bool
	err = s.coding(ctx, func() (err error) {
		reconstructed, err = c.Decode(shards, int(blk.Len), buf.Bytes())
		return err
	})
	if err != nil {
		buf.Release()
		return nil, 0, fmt.Errorf("decode block %d of %q: %w", i, b.Name, err)
	}
	if reconstructed {
		s.metrics.degradedReads.Inc()
	}
	return buf, int(blk.Len), nil
}

// fetchShards reads enough shards of block i to decode it: the k data
// shards first, then parity shards for each one that is missing or corrupt.
// Shards on agents that are not usable (view) are tried last. skip names
// a shard index not to read (-1 for none): repair rebuilds it.
func (s *Store) fetchShards(ctx context.Context, b *pb.Blob, i, skip int, view *holderView) ([][]byte, error) {
	return s.fetchShardsInto(ctx, b, i, skip, view, nil, nil)
}

// errHolderLagged ends the shard transfers of a holder a read gave up on.
var errHolderLagged = errors.New("sent no shard while the other holders sent theirs")

// fetchShardsInto is fetchShards that reads the data shards this agent
// holds into their place in block, the buffer the block is decoded into
// (data shard j at j*sl, sl its shard length; nil: into buffers of their
// own), so that codec.Decode finds them there. lend lends block's memory
// to a read of this agent's files that may go on after the fetch
// (readOwn).
//
// A holder that keeps the read waiting, silent, for HolderLag after the
// other shards asked for arrived is given up on (the rest of the read
// asks it last, view) when the agents not given up on can still make k
// shards: its transfer is cancelled and parity is read in its place. A
// stopped agent, whose kernel still holds its connections open, would
// otherwise hold every block for ShardTimeout.
func (s *Store) fetchShardsInto(ctx context.Context, b *pb.Blob, i, skip int, view *holderView, block []byte, lend func() func()) ([][]byte, error) {
	blk := b.Blocks[i]
	k := int(b.DataShards)
	n := k + int(b.ParityShards)
	sl := codec.ShardLen(int(blk.Len), k)
	into := func(idx int) []byte {
		if idx >= k || (idx+1)*sl > len(block) {
			return nil
		}
		return block[idx*sl : idx*sl : (idx+1)*sl]
	}
	shards := make([][]byte, n)
	var errs []error
	var mu sync.Mutex
	// unreachable holds shards whose agent gossip sees alive but whose
	// connection failed at once: tried again, waiting for the connection,
	// when the others are not enough.
	var unreachable []int
	waitReady := false
	// First the data shards (and, when some have no holder, as many parity
	// shards as it takes to make up k), then the rest as shards fail.
	var want, rest, down []int
	fetch := func(idxs []int) {
		done := make(chan int, len(idxs))
		cancels := make([]context.CancelCauseFunc, len(idxs))
		for j, idx := range idxs {
			var sctx context.Context
			sctx, cancels[j] = context.WithCancelCause(ctx)
			go func() {
				node := b.Holder(blk, idx)
				ref := &pb.ShardRef{BlobId: b.Id, Block: uint32(i), Index: uint32(idx)}
				p, err := s.getShardInto(sctx, node, ref, blk.Sums[idx], waitReady, into(idx), lend)
				if cause := context.Cause(sctx); err != nil && errors.Is(cause, errHolderLagged) {
					err = fmt.Errorf("get shard %s/%d/%d from %s: %w", ref.BlobId, ref.Block, ref.Index, node, cause)
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
					if !waitReady && view.alive[node] && status.Code(err) == codes.Unavailable {
						unreachable = append(unreachable, idx)
					}
				} else {
					shards[idx] = p
				}
				mu.Unlock()
				done <- j
			}()
		}
		s.awaitShards(b, i, idxs, done, cancels, func(lagging []int) bool {
			mu.Lock()
			have := count(shards)
			mu.Unlock()
			for _, idx := range rest {
				if node := b.Holder(blk, idx); view.usable(node) && !slices.ContainsFunc(lagging, func(l int) bool {
					return b.Holder(blk, l) == node
				}) {
					have++
				}
			}
			return have >= k
		}, view)
	}
	for idx := range n {
		node := b.Holder(blk, idx)
		switch {
		case idx == skip || node == "":
		case !view.usable(node):
			down = append(down, idx)
		case len(want) < k:
			want = append(want, idx)
		default:
			rest = append(rest, idx)
		}
	}
	rest = append(rest, down...)
	fetch(want)
	for got := count(shards); got < k && len(rest) > 0 && ctx.Err() == nil; got = count(shards) {
		// Holders given up on meanwhile go last.
		var ahead, behind []int
		for _, idx := range rest {
			if view.usable(b.Holder(blk, idx)) {
				ahead = append(ahead, idx)
			} else {
				behind = append(behind, idx)
			}
		}
		rest = append(ahead, behind...)
		more := min(k-got, len(rest))
		next := rest[:more]
		rest = rest[more:]
		fetch(next)
	}
	if count(shards) < k && len(unreachable) > 0 && ctx.Err() == nil {
		waitReady = true
		fetch(unreachable)
	}
	if got := count(shards); got < k {
		return nil, fmt.Errorf("%w: block %d of %q: %d of %d shards readable, need %d (%v)",
			ErrNotEnoughShards, i, b.Name, got, n, k, errors.Join(errs...))
	}
	return shards, nil
}

// awaitShards waits until the transfers of shards idxs of block i of b
// have all ended, each sending its position in idxs on done. Once the
// ones still running have kept it waiting for HolderLag since the last
// one ended (or since they began), and enough(those shards) reports that
// the others can still make up the block, it cancels them and marks
// their agents given up on in view: other agents, and this agent's own
// reads of a disk that lags (readOwn; such a read goes on aside, and
// holds its loan of the buffer it reads into until it ends).
func (s *Store) awaitShards(b *pb.Blob, i int, idxs []int, done <-chan int, cancels []context.CancelCauseFunc, enough func(lagging []int) bool, view *holderView) {
	defer func() {
		for _, cancel := range cancels {
			cancel(nil)
		}
	}()
	ended := make([]bool, len(idxs))
	left := len(idxs)
	last := time.Now()
	tick := time.NewTicker(s.cfg.HolderLag / 4)
	defer tick.Stop()
	for left > 0 {
		select {
		case j := <-done:
			ended[j] = true
			left--
			last = time.Now()
			continue
		case now := <-tick.C:
			if now.Sub(last) < s.cfg.HolderLag {
				continue
			}
		}
		var lagging []int
		for j, idx := range idxs {
			if !ended[j] {
				lagging = append(lagging, idx)
			}
		}
		if len(lagging) == 0 || !enough(lagging) {
			continue
		}
		for j, idx := range idxs {
			if !slices.Contains(lagging, idx) {
				continue
			}
			node := b.Holder(b.Blocks[i], idx)
			switch {
			case !view.giveUp(node):
			case node == s.cluster.Self():
				s.log.Info("blob read: this agent's shard disk read none of its shards while the other holders sent theirs; reading parity from them instead: "+
					"if this goes on, check that disk (dmesg, iostat)",
					"blob", b.Name, "dir", s.shards.Dir(), "block", i, "silent", time.Since(last).Round(time.Millisecond))
			default:
				s.log.Info("blob read: an agent holding shards sent none while the others sent theirs; reading parity from the others instead",
					"blob", b.Name, "agent", node, "block", i, "silent", time.Since(last).Round(time.Millisecond))
			}
			cancels[j](errHolderLagged)
		}
	}
}

func count(shards [][]byte) int {
	c := 0
	for _, s := range shards {
		if s != nil {
			c++
		}
	}
	return c
}

// Shard states reported by Stat.
const (
	ShardOK         = "ok"
	ShardMissing    = "missing"
	ShardNodeFailed = "node-failed"
	ShardNodeGone   = "node-gone"
	ShardCorrupt    = "corrupt"
	ShardLost       = "lost"
)

// Blob health reported by Stat and List.
const (
	HealthHealthy    = "healthy"
	HealthDegraded   = "degraded"
	HealthUnreadable = "unreadable"
)

// Stat returns a blob's metadata, where each shard is, and whether the
// blob is healthy, degraded or unreadable, judged from the metadata, the
// agents' state and the corrupt shards reported to the leader (it reads
// no shard). c is the read's consistency (see BlobGetRequest).
func (s *Store) Stat(ctx context.Context, name string, minRev uint64, c pb.Consistency) (*pb.BlobStatResponse, error) {
	b, err := s.lookup(ctx, name, minRev, c)
	if errors.Is(err, ErrNotFound) {
		for _, p := range s.cluster.Meta().PendingBlobs() {
			if p.Name == name {
				return nil, fmt.Errorf("%w: blob %q is not stored yet: a put of it (id %s, coordinated by %s) has not finished; stat again in a moment",
					ErrNotFound, name, p.Id, p.Node)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	health, states := s.assess(b, s.aliveSet(), s.corruptShards(ctx, b), true)
	out := proto.Clone(b).(*pb.Blob)
	out.Inline = nil
	return &pb.BlobStatResponse{Blob: out, Health: health, Shards: states}, nil
}

// aliveSet maps every agent in the cluster to whether it is alive.
func (s *Store) aliveSet() map[string]bool {
	alive := make(map[string]bool)
	for _, m := range s.members() {
		alive[m.Name] = m.Alive
	}
	return alive
}

// corruptShards asks the leader which copies of b's shards were reported
// corrupt or lost and not yet rewritten, by the agent holding them; nil
// when it cannot tell. A report that names no agent is about the holder.
func (s *Store) corruptShards(ctx context.Context, b *pb.Blob) map[copyKey]string {
	st, err := s.LeaderRepairStatus(ctx, b.Id)
	if err != nil {
		s.log.Debug("corrupt shards unknown: no answer from the leader", "err", err)
		return nil
	}
	out := make(map[copyKey]string, len(st.Corrupt))
	addReported(out, map[string]*pb.Blob{b.Id: b}, st.Corrupt)
	return out
}

// addReported adds to out the states of the reported shards of the blobs
// in byID (by id), under the agent holding them: a report that names no
// agent is about the holder.
func addReported(out map[copyKey]string, byID map[string]*pb.Blob, reported []*pb.ShardRef) {
	for _, r := range reported {
		b := byID[r.BlobId]
		if b == nil {
			continue
		}
		node := r.Node
		if node == "" {
			node = holderOf(b, r.Block, r.Index)
		}
		state := ShardCorrupt
		if r.Lost {
			state = ShardLost
		}
		out[copyKey{shardKey{r.BlobId, r.Block, r.Index}, node}] = state
	}
}

// corruptShardsOf is corruptShards of many blobs, asking the leader about
// at most MaxRepairStatusBlobs of them at a time; what it cannot learn
// (no leader to ask) it leaves out, and the health of those blobs is
// judged from where their shards are alone.
func (s *Store) corruptShardsOf(ctx context.Context, blobs []*pb.Blob) map[copyKey]string {
	byID := make(map[string]*pb.Blob, len(blobs))
	ids := make([]string, 0, len(blobs))
	for _, b := range blobs {
		if len(b.Blocks) > 0 { // an inline blob has no shards
			byID[b.Id] = b
			ids = append(ids, b.Id)
		}
	}
	out := make(map[copyKey]string)
	for chunk := range slices.Chunk(ids, MaxRepairStatusBlobs) {
		st, err := s.LeaderRepairStatusOf(ctx, &pb.RepairStatusRequest{BlobIds: chunk})
		if err != nil {
			s.log.Debug("corrupt shards unknown: no answer from the leader", "err", err)
			return out
		}
		addReported(out, byID, st.Corrupt)
	}
	return out
}

// assess judges a blob's health from where its shards are; alive is
// aliveSet's map, corrupt the copies known to be corrupt or lost, with
// their state (may be nil): only the holder's own copy counts.
func (s *Store) assess(b *pb.Blob, alive map[string]bool, corrupt map[copyKey]string, detail bool) (string, []*pb.ShardState) {
	health := HealthHealthy
	var states []*pb.ShardState
	for i, blk := range b.Blocks {
		ok := 0
		for idx := range blk.Holders {
			node := b.Holder(blk, idx)
			st := ShardOK
			up, known := alive[node]
			bad := corrupt[copyKey{shardKey{b.Id, uint32(i), uint32(idx)}, node}]
			switch {
			case node == "":
				st = ShardMissing
			case !known:
				st = ShardNodeGone
			case !up:
				st = ShardNodeFailed
			case bad != "":
				st = bad
			default:
				ok++
			}
			if detail {
				states = append(states, &pb.ShardState{Block: uint32(i), Index: uint32(idx), Node: node, State: st})
			}
		}
		switch {
		case ok < int(b.DataShards):
			health = HealthUnreadable
		case ok < len(blk.Holders) && health == HealthHealthy:
			health = HealthDegraded
		}
	}
	return health, states
}

// List summarises the blobs whose names start with prefix, from this
// replica once it has caught up with the leader's revision (a restarted
// agent's replica starts behind). With consistency c DEFAULT and no leader
// to ask, the replica must pass the registry's DEFAULT read check; STALE
// lists the replica as it is; CONSISTENT needs the leader's revision.
func (s *Store) List(ctx context.Context, prefix string, c pb.Consistency) ([]*pb.BlobSummary, uint64, error) {
	if err := s.listable(ctx, c); err != nil {
		return nil, 0, err
	}
	blobs, rev := s.cluster.Meta().Blobs(prefix)
	return s.summarise(ctx, blobs), rev, nil
}

// ListPage is List of one page: the first limit of the blobs under prefix
// after the name after ("": from the first) that keep accepts, in name
// order (keep as raftstore.FSM.BlobsPage takes it). total counts all
// those under prefix that keep accepts. Only the page's blobs are judged,
// and only they asked about at the leader.
func (s *Store) ListPage(ctx context.Context, prefix, after string, limit int, keep func(name string) bool, c pb.Consistency) (
	page []*pb.BlobSummary, total int, rev uint64, err error) {
	if err := s.listable(ctx, c); err != nil {
		return nil, 0, 0, err
	}
	blobs, total, rev := s.cluster.Meta().BlobsPage(prefix, after, limit, keep)
	return s.summarise(ctx, blobs), total, rev, nil
}

// listable readies this replica for a listing with consistency c, as
// List says.
func (s *Store) listable(ctx context.Context, c pb.Consistency) error {
	if err := validConsistency(c); err != nil {
		return err
	}
	switch c {
	case pb.Consistency_DEFAULT:
		if err := s.current(ctx); err != nil {
			return fmt.Errorf("this agent's replica cannot list the blobs: %w", err)
		}
	case pb.Consistency_CONSISTENT:
		if err := s.catchUp(ctx); err != nil {
			return err
		}
	}
	return nil
}

// summarise summarises blobs, each with its health as assess judges it.
func (s *Store) summarise(ctx context.Context, blobs []*pb.Blob) []*pb.BlobSummary {
	out := make([]*pb.BlobSummary, 0, len(blobs))
	alive := s.aliveSet()
	corrupt := s.corruptShardsOf(ctx, blobs)
	for _, b := range blobs {
		health, _ := s.assess(b, alive, corrupt, false)
		out = append(out, &pb.BlobSummary{
			Name: b.Name, Size: b.Size, DataShards: b.DataShards, ParityShards: b.ParityShards,
			Health: health, Created: b.Created, Inline: len(b.Blocks) == 0,
		})
	}
	return out
}

// Delete removes the blob called name; its shards are deleted in the
// background (and collected as orphans by agents that miss the request).
func (s *Store) Delete(ctx context.Context, name string) (uint64, error) {
	if err := ValidateName(name); err != nil {
		return 0, err
	}
	old := s.cluster.Meta().Blob(name)
	rev, err := s.cluster.Propose(ctx, &pb.Command{Kind: &pb.Command_BlobDelete{BlobDelete: &pb.BlobDelete{Name: name}}})
	if err != nil {
		return 0, err
	}
	if old != nil {
		s.dropShards(old, rev)
	}
	return rev, nil
}
