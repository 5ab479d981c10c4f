package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/placement"
)

// MaxNameLen bounds a blob name.
const MaxNameLen = 1024

// ValidateName checks a blob name: 1-1024 bytes of letters, digits and
// . _ - / +, no empty or "." or ".." path segment, no leading or trailing
// slash.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: blob name is empty", ErrInvalidArgument)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: blob name is %d bytes, at most %d", ErrInvalidArgument, len(name), MaxNameLen)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-/+", r)
		if !ok {
			return fmt.Errorf("%w: blob name %q: character %q at %d is not allowed (letters, digits and . _ - / + are)",
				ErrInvalidArgument, name, r, i)
		}
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: blob name %q: empty, \".\" or \"..\" path segment", ErrInvalidArgument, name)
		}
	}
	return nil
}

// MaxMetadataBytes bounds the metadata of one blob. It is committed in one
// Raft entry (BlobCommit), which reaches the leader in one gRPC message
// (agents accept at most MaxBlockSize + 1 MiB), and is kept in every
// snapshot; the bound leaves room for the entry's framing.
const MaxMetadataBytes = 8 << 20

// metadataBytes bounds from above the encoded metadata of a blob of size
// bytes cut into blockSize-byte blocks of n shards each: per block, n
// holders (at most 2 bytes each), n 4-byte checksums and 16 bytes of length
// and framing; per blob, 32 KiB for its name, digest and agent list.
func metadataBytes(size uint64, blockSize, n int) uint64 {
	blocks := (size + uint64(blockSize) - 1) / uint64(blockSize)
	return blocks*uint64(6*n+16) + 32<<10
}

// checkMetadata refuses a blob whose metadata would not fit in one Raft
// entry; n is its shards per block.
func (s *Store) checkMetadata(name string, size uint64, n int) error {
	need := metadataBytes(size, s.cfg.BlockSize, n)
	if need <= uint64(s.cfg.MaxMetadataBytes) {
		return nil
	}
	return fmt.Errorf("%w: blob %q: %s with %d-byte blocks of %d shards needs %s of metadata; the limit is %s (one Raft entry): "+
		"use a larger block size (the agents' --blob-block-size), fewer shards, or split the blob",
		ErrInvalidArgument, name, sizeString(size), s.cfg.BlockSize, n, sizeString(need), sizeString(uint64(s.cfg.MaxMetadataBytes)))
}

// sizeString writes n bytes in binary units: "64 GiB", "2.1 GiB", "512 B".
func sizeString(n uint64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatUint(n, 10) + " B"
	}
	v, u := float64(n)/1024, 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	return strings.TrimSuffix(strconv.FormatFloat(v, 'f', 1, 64), ".0") + " " + units[u:u+1] + "iB"
}

func newBlobID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// checkPutHeader checks what a put's header alone decides, for Put and
// BeginPut: the name, the size against the max blob size, the metadata
// bound when the size is known, and an existing blob without overwrite.
// It returns the blob the put replaces, if any.
func (s *Store) checkPutHeader(h *pb.BlobPutHeader) (old *pb.Blob, err error) {
	if err := ValidateName(h.GetName()); err != nil {
		return nil, err
	}
	if h.Size < 0 || h.Size > s.cfg.MaxBlobSize {
		return nil, fmt.Errorf("%w: blob size %d: at most %d bytes (max blob size)", ErrTooLarge, h.Size, s.cfg.MaxBlobSize)
	}
	if h.Size > 0 {
		if err := s.checkMetadata(h.Name, uint64(h.Size), shardsPerBlock(h, s.members())); err != nil {
			return nil, err
		}
	}
	old = s.cluster.Meta().Blob(h.Name)
	if old != nil && !h.Overwrite {
		return nil, fmt.Errorf("%w: blob %q; put with overwrite to replace it", ErrAlreadyExists, h.Name)
	}
	return old, nil
}

// PutResult is what a successful put stored.
type PutResult struct {
	Blob     *pb.Blob
	Revision uint64
	// Missing counts shards that could not be stored and wait for repair.
	Missing int
}

// Put stores the bytes read from src under h.Name. Small blobs go inline
// into the metadata. Larger ones are encoded block by block; a block's
// shards travel to their agents while the next block is read and encoded.
// The blob becomes visible only when its metadata commits; on any failure
// or cancellation the put is aborted and its shards are deleted.
func (s *Store) Put(ctx context.Context, h *pb.BlobPutHeader, src io.Reader) (*PutResult, error) {
	old, err := s.checkPutHeader(h)
	if err != nil {
		return nil, err
	}
	// Cut off from the leader, this agent can commit nothing, and its
	// gossip's view of the agents alive is the minority's: say so before
	// reading the body or placing a shard.
	if err := s.cluster.CutOff(); err != nil {
		return nil, fmt.Errorf("put %q: %w", h.Name, err)
	}
	// Read one byte past the inline limit to learn whether the blob fits.
	head := make([]byte, s.cfg.InlineMax+1)
	n, err := io.ReadFull(src, head)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return s.putInline(ctx, h, head[:n], old)
	case err != nil:
		return nil, fmt.Errorf("read blob %q: %w", h.Name, err)
	}
	members, sc, err := s.scheme(ctx, h)
	if err != nil {
		return nil, err
	}
	p := &put{s: s, h: h, sc: sc, id: newBlobID(), sha: sha256.New()}
	if p.codec, err = codec.New(sc.K, sc.M); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	if _, err := s.cluster.Propose(ctx, &pb.Command{Kind: &pb.Command_BlobPending{BlobPending: &pb.BlobPending{
		Id: p.id, Name: h.Name, Node: s.cluster.Self(), Started: s.now().UnixNano(),
	}}}); err != nil {
		s.abort(p.id, nil) // in case it was applied after all
		return nil, fmt.Errorf("announce put of %q: %w", h.Name, err)
	}
	res, err := p.run(ctx, io.MultiReader(bytes.NewReader(head), src), placeable(members))
	if err != nil {
		if res, err = s.failPut(p, err); err != nil {
			return nil, err
		}
	}
	if old != nil && old.Id != res.Blob.Id {
		s.dropShards(old, res.Revision)
	}
	if res.Missing > 0 {
		s.log.Warn("blob stored with missing shards; repair will store them",
			"blob", h.Name, "missing", res.Missing, "scheme", sc.String())
		s.repair.nudge()
	}
	return res, nil
}

func (s *Store) putInline(ctx context.Context, h *pb.BlobPutHeader, data []byte, old *pb.Blob) (*PutResult, error) {
	if h.Size > 0 && int64(len(data)) != h.Size {
		return nil, fmt.Errorf("%w: blob %q: header says %d bytes, stream carried %d", ErrInvalidArgument, h.Name, h.Size, len(data))
	}
	sum := sha256.Sum256(data)
	blob := &pb.Blob{Name: h.Name, Id: newBlobID(), Size: uint64(len(data)), Sha256: sum[:], Inline: data}
	rev, err := s.commit(ctx, blob, h.Overwrite)
	if err != nil {
		return nil, err
	}
	if old != nil {
		s.dropShards(old, rev)
	}
	s.metrics.putBytes.Add(float64(len(data)))
	return &PutResult{Blob: s.committed(ctx, blob, rev), Revision: rev}, nil
}

// replicaWait bounds how long a put waits for this agent's replica to apply
// its commit before it answers from the metadata it proposed.
const replicaWait = 2 * time.Second

// committed returns the blob a put committed at rev as this replica holds
// it, waiting (at most replicaWait) for the replica to apply the commit.
// A replica further behind (a slow disk, a follower catching up) gives the
// proposed metadata with the commit's revision instead: the put succeeded
// either way.
func (s *Store) committed(ctx context.Context, proposed *pb.Blob, rev uint64) *pb.Blob {
	_ = s.waitRevision(context.WithoutCancel(ctx), rev, replicaWait)
	if b := s.cluster.Meta().BlobByID(proposed.Id); b != nil {
		return b
	}
	b := proto.Clone(proposed).(*pb.Blob)
	b.CreateRevision, b.ModRevision = rev, rev
	return b
}

// commitWait bounds how long a put waits for its commit's outcome once it
// has proposed it, whatever its caller does meanwhile.
const commitWait = 15 * time.Second

// commit proposes the blob's metadata and waits for the outcome, at most
// commitWait, even when ctx ends meanwhile: once proposed, the commit may
// be applied whether or not anyone waits, and the put must report what
// happened. A failure that does not say whether the entry was applied (no
// answer, a leader change) is retried with the same request id, which the
// registry applies at most once, so the answer that comes is the commit's.
// When none comes in time the error wraps ErrOutcomeUnknown.
func (s *Store) commit(ctx context.Context, blob *pb.Blob, overwrite bool) (uint64, error) {
	return s.commitAs(ctx, blob, overwrite, s.cluster.Self()+"-commit-"+blob.Id)
}

// commitAs is commit under the given request id.
func (s *Store) commitAs(ctx context.Context, blob *pb.Blob, overwrite bool, requestID string) (uint64, error) {
	cmd := &pb.Command{
		RequestId: requestID,
		Kind:      &pb.Command_BlobCommit{BlobCommit: &pb.BlobCommit{Blob: blob, Overwrite: overwrite}},
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.commitWait)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel) // the agent is shutting down
	defer stop()
	for {
		rev, err := s.cluster.Propose(cctx, cmd)
		switch {
		case err == nil:
			return rev, nil
		case errors.Is(err, ErrAlreadyExists) && s.cluster.Meta().BlobByID(blob.Id) != nil:
			// Our own earlier attempt, applied, and no longer
			// recognised by its request id.
			return s.cluster.Meta().BlobByID(blob.Id).CreateRevision, nil
		case answered(err):
			return 0, fmt.Errorf("commit blob %q: %w", blob.Name, err)
		}
		select {
		case <-cctx.Done():
			return 0, fmt.Errorf("%w: commit of blob %q (id %s) was proposed, but no answer came within %s (%v): "+
				"`zrpcctl blob stat %s` shows whether it was stored", ErrOutcomeUnknown, blob.Name, blob.Id, s.commitWait, err, blob.Name)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// answered reports whether err is the registry's answer to a proposal
// (it was applied and refused), as opposed to a failure that leaves it
// unknown whether the proposal was applied.
func answered(err error) bool {
	for _, e := range []error{ErrInvalidArgument, ErrAlreadyExists, ErrNotFound, ErrTooLarge} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// failPut ends a put that failed: it aborts the put and deletes its
// shards. When the put's commit had an unknown outcome, the abort settles
// it: once the abort is applied, the commit cannot be any more (a blob
// with shards commits only while its put is pending), so the blob is
// either committed already, and the put succeeded after all, or never
// will be. Only when the abort has no answer either is the outcome still
// unknown.
func (s *Store) failPut(p *put, err error) (*PutResult, error) {
	rev, aerr := s.abort(p.id, p.usedNodes())
	if errors.Is(err, ErrOutcomeUnknown) && aerr == nil {
		meta := s.cluster.Meta()
		s.waitRevision(s.ctx, rev, 5*time.Second)
		if b := meta.BlobByID(p.id); b != nil {
			s.log.Info("put's commit was applied although its answer was lost", "blob", p.h.Name, "id", p.id)
			return &PutResult{Blob: b, Revision: b.ModRevision, Missing: p.missing}, nil
		}
		if meta.Revision() >= rev {
			err = fmt.Errorf("put of %q failed: its commit was not applied (%v) and the put is aborted; put it again", p.h.Name, err)
		}
	}
	s.metrics.putsFailed.Inc()
	return nil, err
}

// put is one put in progress.
type put struct {
	s     *Store
	h     *pb.BlobPutHeader
	sc    Scheme
	id    string
	codec *codec.Codec
	sha   hash.Hash
	size  uint64

	mu     sync.Mutex
	blocks []*pb.BlobBlock
	holder [][]string // per block, per shard: agent name ("" = missing)
	used   map[string]bool
	err    error
	// missing counts the shards the commit leaves to repair.
	missing int
}

func (p *put) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
}

func (p *put) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *put) usedNodes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.used))
	for n := range p.used {
		out = append(out, n)
	}
	return out
}

// run reads, encodes and sends every block to the alive agents (those the
// scheme was chosen for), then commits the metadata.
func (p *put) run(ctx context.Context, src io.Reader, alive []placement.Node) (*PutResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.used = make(map[string]bool)
	inflight := make(chan struct{}, p.s.cfg.PutInflight)
	var wg sync.WaitGroup
	defer func() {
		cancel() // on an early return, stop the shards in flight
		wg.Wait()
	}()
	for idx := 0; ; idx++ {
		if err := p.failed(); err != nil {
			return nil, err
		}
		select {
		case inflight <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("put %q: %w", p.h.Name, ctx.Err())
		}
		blk := p.codec.NewBlock(p.s.cfg.BlockSize)
		drop := func() { // the block goes nowhere: free it and its slot
			blk.Release()
			<-inflight
		}
		n, err := io.ReadFull(src, blk.Data()[:p.s.cfg.BlockSize])
		last := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
		if err != nil && !last {
			drop()
			return nil, fmt.Errorf("read blob %q: %w", p.h.Name, err)
		}
		if n == 0 {
			drop()
			break
		}
		p.size += uint64(n)
		if p.size > uint64(p.s.cfg.MaxBlobSize) {
			drop()
			return nil, fmt.Errorf("%w: blob %q is larger than the max blob size %d", ErrTooLarge, p.h.Name, p.s.cfg.MaxBlobSize)
		}
		if err := p.s.checkMetadata(p.h.Name, p.size, p.sc.K+p.sc.M); err != nil {
			drop() // a stream of unknown size outgrew what one entry carries
			return nil, err
		}
		p.sha.Write(blk.Data()[:n])
		if err := p.encode(ctx, blk, n); err != nil {
			drop()
			return nil, err
		}
		targets := p.place(alive)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inflight }()
			defer blk.Release()
			p.send(ctx, idx, n, blk, targets, alive)
		}()
		if last {
			break
		}
	}
	wg.Wait()
	if err := p.failed(); err != nil {
		return nil, err
	}
	if p.h.Size > 0 && p.size != uint64(p.h.Size) {
		return nil, fmt.Errorf("%w: blob %q: header says %d bytes, stream carried %d", ErrInvalidArgument, p.h.Name, p.h.Size, p.size)
	}
	if err := p.sync(ctx); err != nil {
		return nil, err
	}
	return p.commit(ctx)
}

// sync makes the staged shards durable on every agent that took some, all
// agents at once: on each, exactly the shards the put recorded there.
// Others staged there, by attempts the put saw fail (a lost answer, the
// shard sent to a spare since), stay staged until orphan collection
// removes them: committed, they would make up for recorded shards the
// agent no longer has. An agent that fails, or that no longer has all the
// shards recorded there (it restarted), loses its shards of this put,
// which may leave a block short of k+1. This agent's own shards not made
// durable in time (its disk hangs in fsync) fail the put (syncOn).
func (p *put) sync(ctx context.Context) error {
	recorded := make(map[string][]*pb.ShardRef)
	for b, holders := range p.holder {
		for i, n := range holders {
			if n != "" {
				recorded[n] = append(recorded[n], &pb.ShardRef{BlobId: p.id, Block: uint32(b), Index: uint32(i)})
			}
		}
	}
	var mu sync.Mutex
	lost := make(map[string]error)
	var wg sync.WaitGroup
	for node, refs := range recorded {
		wg.Go(func() {
			if err := p.syncOn(ctx, node, refs); err != nil {
				p.s.log.Warn("agent could not make its shards of a put durable", "blob", p.h.Name, "agent", node, "err", err)
				mu.Lock()
				lost[node] = err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(lost) == 0 {
		return nil
	}
	if err := lost[p.s.cluster.Self()]; errors.Is(err, errOwnSyncAbandoned) {
		return fmt.Errorf("put of %q: %w", p.h.Name, err)
	}
	if p.s.cluster.Meta().PendingBlob(p.id) == nil {
		return fmt.Errorf("%w: put of %q was aborted by the leader (this agent was thought failed, or the put ran past the put timeout) and its shards collected; retry the put",
			ErrNotFound, p.h.Name)
	}
	for b, holders := range p.holder {
		stored := 0
		var why []string // what the lost agents said, once each
		for i, n := range holders {
			switch err := lost[n]; {
			case err != nil:
				holders[i] = ""
				if w := "agent " + n + ": " + err.Error(); !slices.Contains(why, w) {
					why = append(why, w)
				}
			case n != "":
				stored++
			}
		}
		if stored < p.sc.need() {
			return fmt.Errorf("%w: block %d of %q: %d of %d shards durable, need %d; %s",
				ErrNotEnoughShards, b, p.h.Name, stored, len(holders), p.sc.need(), strings.Join(why, "; "))
		}
	}
	return nil
}

// syncOn makes the shards refs, which the put recorded on node, durable
// there, and only those. It fails, naming the shards node lacks, when
// some of them were no longer staged there.
func (p *put) syncOn(ctx context.Context, node string, refs []*pb.ShardRef) error {
	size := p.syncSize(refs)
	n, bound, hung, err := p.s.syncBounded(ctx, node, p.id, refs, size, func(int, error) {
		if _, err := p.s.shards.DeleteBlob(p.id); err != nil {
			p.s.log.Warn("could not delete this agent's shards of a put that failed while they were made durable; orphan collection removes them",
				"blob", p.h.Name, "id", p.id, "err", err)
		}
	})
	if errors.Is(err, errCommitAbandoned) {
		// The commit on this agent goes on and deletes them itself once
		// it ends: the abort leaves them alone.
		p.mu.Lock()
		delete(p.used, p.s.cluster.Self())
		p.mu.Unlock()
		err = fmt.Errorf("%w: %w", errOwnSyncAbandoned, err)
	}
	switch {
	case err == nil:
	case !hung:
		return err
	case node == p.s.cluster.Self():
		return fmt.Errorf("%w: %s (%w)", ErrNotEnoughShards, p.s.diskHangs(node, "the put's shards", size, bound), err)
	default:
		return fmt.Errorf("%s: %w", p.s.diskHangs(node, "the put's shards", size, bound), err)
	}
	if n >= len(refs) {
		return nil
	}
	return fmt.Errorf("%d of the %d shards the put stored there were still staged (did it restart?); missing: %s",
		n, len(refs), p.s.missingShards(ctx, node, p.id, refs))
}

// errOwnSyncAbandoned: a put stopped waiting for this agent's own shard
// store to make its shards durable. The commit, which cannot be called
// off, goes on; the put fails.
var errOwnSyncAbandoned = errors.New("the put stopped waiting for this agent's own shards to become durable")

// syncMinRate is the slowest disk, in bytes per second, a put's sync
// waits for: an agent is given ShardTimeout, and a second for every
// syncMinRate bytes of the put's shards there, to make them durable. A
// slow disk is not a failed one, so the bound is generous (the shards
// were written already, and the sync flushes what the page cache still
// holds of them); but an agent whose disk hangs in fsync still answers
// gossip, and without a bound it held a put whose client set no
// deadline for as long as the disk hung.
const syncMinRate = 1 << 20

// syncSize is the bytes of the shards refs, shards of the put's blocks.
func (p *put) syncSize(refs []*pb.ShardRef) int64 {
	var size int64
	for _, r := range refs {
		if int(r.Block) < len(p.blocks) && p.blocks[r.Block] != nil {
			size += int64(codec.ShardLen(int(p.blocks[r.Block].Len), p.sc.K))
		}
	}
	return size
}

// missingShards names those of refs, shards of blob id, that node does
// not durably hold, as it says itself (HeldShards): "block 0 shard 1,
// block 3 shard 1", the first few only of a long list.
func (s *Store) missingShards(ctx context.Context, node, id string, refs []*pb.ShardRef) string {
	var indexes []uint32
	for _, r := range refs {
		if !slices.Contains(indexes, r.Index) {
			indexes = append(indexes, r.Index)
		}
	}
	parts, err := s.heldShards(ctx, node, id, indexes)
	if err != nil {
		return fmt.Sprintf("unknown, the agent did not say what it holds (%v)", err)
	}
	held := make(map[shardKey]bool)
	for _, part := range parts {
		for _, b := range part.Blocks {
			held[shardKey{id, b, part.Index}] = true
		}
	}
	const listed = 8
	var names []string
	missing := 0
	for _, r := range refs {
		if held[shardKey{id, r.Block, r.Index}] {
			continue
		}
		if missing++; missing <= listed {
			names = append(names, fmt.Sprintf("block %d shard %d", r.Block, r.Index))
		}
	}
	switch {
	case missing == 0:
		return "none, by what it holds now"
	case missing > listed:
		names = append(names, fmt.Sprintf("and %d more", missing-listed))
	}
	return strings.Join(names, ", ")
}

func (p *put) encode(ctx context.Context, blk *codec.Block, n int) error {
	if err := p.s.coding(ctx, func() error { return p.codec.Encode(blk, n) }); err != nil {
		return fmt.Errorf("encode block of %q: %w", p.h.Name, err)
	}
	return nil
}

func blockKey(id string, block int) string { return id + "/" + strconv.Itoa(block) }

// place picks the agents for a block's shards: rendezvous order over the
// alive agents by blob id, at most m shards in one zone when zones allow
// it. Every block of a put gets the same agents for the same shard
// indexes, so that each agent appends to one part file per blob (a spare
// taking a failed agent's shard is the exception). With fewer agents than
// shards, the last shards get no agent (missing).
func (p *put) place(alive []placement.Node) []string {
	n := p.sc.K + p.sc.M
	picked := placement.Place(p.id, alive, n, max(p.sc.M, 1))
	out := make([]string, n)
	for i, node := range picked {
		out[i] = node.ID
	}
	return out
}

// send stores one block's shards on their agents. A shard whose agent
// fails is tried once on the next agent in rendezvous order that holds no
// shard of this block.
func (p *put) send(ctx context.Context, idx, blockLen int, blk *codec.Block, targets []string, alive []placement.Node) {
	shards, sums := blk.Shards(), blk.Sums()
	got := make([]string, len(shards))
	failed := make([]error, len(shards)) // the last failure of each shard not stored
	var mu sync.Mutex
	taken := make(map[string]bool, len(targets))
	for _, t := range targets {
		if t != "" {
			taken[t] = true
		}
	}
	spare := func() string {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range placement.Rank(blockKey(p.id, idx), alive) {
			if !taken[n.ID] {
				taken[n.ID] = true
				return n.ID
			}
		}
		return ""
	}
	var wg sync.WaitGroup
	for i, target := range targets {
		if target == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref := &pb.ShardRef{BlobId: p.id, Block: uint32(idx), Index: uint32(i)}
			for try := 0; try < 2 && target != "" && ctx.Err() == nil; try++ {
				p.markUsed(target)
				err := p.s.putShardLent(ctx, target, ref, p.sc, p.s.cfg.BlockSize, blockLen, sums[i], shards[i], true, blk.Lend)
				if err == nil {
					got[i] = target
					return
				}
				p.s.log.Warn("shard put failed", "blob", p.h.Name, "block", idx, "shard", i, "agent", target, "err", err)
				failed[i] = fmt.Errorf("shard %d on %s: %w", i, target, err)
				target = spare()
			}
		}()
	}
	wg.Wait()
	stored := 0
	for _, g := range got {
		if g != "" {
			stored++
		}
	}
	if stored < p.sc.need() {
		err := fmt.Errorf("%w: block %d of %q: stored %d of %d shards, need %d", ErrNotEnoughShards, idx, p.h.Name, stored, len(shards), p.sc.need())
		if first := firstError(failed); first != nil {
			err = fmt.Errorf("%w; first failure: %w", err, first)
		} else {
			err = fmt.Errorf("%w; too few agents alive? see `zrpcctl members`", err)
		}
		p.fail(err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.blocks) <= idx {
		p.blocks = append(p.blocks, nil)
		p.holder = append(p.holder, nil)
	}
	p.blocks[idx] = &pb.BlobBlock{Len: uint32(blockLen), Sums: append([]uint32(nil), sums...)}
	p.holder[idx] = got
	p.s.metrics.putBytes.Add(float64(blockLen))
}

func (p *put) markUsed(node string) {
	p.mu.Lock()
	p.used[node] = true
	p.mu.Unlock()
}

func (p *put) commit(ctx context.Context) (*PutResult, error) {
	blob := &pb.Blob{
		Name: p.h.Name, Id: p.id, Size: p.size, DataShards: uint32(p.sc.K), ParityShards: uint32(p.sc.M),
		BlockSize: uint32(p.s.cfg.BlockSize), Sha256: p.sha.Sum(nil), Blocks: p.blocks,
	}
	missing := 0
	for b, holders := range p.holder {
		blob.Blocks[b].Holders = make([]uint32, len(holders))
		for i, node := range holders {
			if node == "" {
				missing++
				continue
			}
			blob.Blocks[b].Holders[i] = blob.HolderRef(node)
		}
	}
	p.missing = missing
	rev, err := p.s.commit(ctx, blob, p.h.Overwrite)
	if err != nil {
		return nil, err
	}
	return &PutResult{Blob: p.s.committed(ctx, blob, rev), Revision: rev, Missing: missing}, nil
}

// abort ends a failed put: it withdraws the pending entry and deletes the
// shards already sent (unless the put's commit was applied after all), and
// returns the abort's revision. Both are best effort: the leader aborts
// puts of a dead coordinator, and every agent collects orphan shards on
// its own.
func (s *Store) abort(id string, nodes []string) (uint64, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	rev, err := s.cluster.Propose(ctx, &pb.Command{Kind: &pb.Command_BlobAbort{BlobAbort: &pb.BlobAbort{Ids: []string{id}}}})
	if err != nil {
		s.log.Warn("abort of failed put not committed; the leader will abort it", "id", id, "err", err)
		return 0, err
	}
	s.deleteShardsOn(ctx, nodes, []string{id}, rev)
	return rev, nil
}

// dropShards deletes, in the background, the shards of a blob that is no
// longer referenced since revision rev (deleted or overwritten).
func (s *Store) dropShards(b *pb.Blob, rev uint64) {
	if len(b.Blocks) == 0 || !s.track() { // stopping: orphan collection deletes them
		return
	}
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		defer cancel()
		s.deleteShardsOn(ctx, b.Nodes, []string{b.Id}, rev)
	}()
}

// firstError is the first non-nil error of errs, or nil.
func firstError(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
