package storage

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/bufpool"
	"github.com/zrpcio/zrpc/internal/waitguard"
	"github.com/zrpcio/zrpc/internal/wirecodec"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// reconnectWait bounds how long a read waits for the connection to an agent
// that gossip sees alive: peer connections retry at least once a second.
const reconnectWait = 2 * time.Second

func shardID(ref *pb.ShardRef) shardstore.ID {
	return shardstore.ID{Blob: ref.GetBlobId(), Block: ref.GetBlock(), Index: uint16(ref.GetIndex())}
}

func shardRef(id shardstore.ID) *pb.ShardRef {
	return &pb.ShardRef{BlobId: id.Blob, Block: id.Block, Index: uint32(id.Index)}
}

// putShard stores one shard on node: in the local files when node is this
// agent, over the peer's Shards API otherwise.
//
// A staged shard (a put's, repair's) is written without fsync and becomes
// durable and readable at syncShards; otherwise it is durable on return.
//
// blockSize is the blob's block size, which places the shard in the
// holder's part file. sum is the payload's CRC32C, computed by the caller
// from these bytes: this agent's own store trusts it, a peer checks it.
func (s *Store) putShard(ctx context.Context, node string, ref *pb.ShardRef, sc Scheme, blockSize, blockLen int, sum uint32, payload []byte, staged bool) error {
	return s.putShardLent(ctx, node, ref, sc, blockSize, blockLen, sum, payload, staged, nil)
}

// putShardLent is putShard of a payload that gRPC may write to a peer by
// reference, after the call has returned: lend keeps the payload's memory
// valid (and unchanged) until the function it returns is called. With a
// nil lend the payload is copied into the message.
func (s *Store) putShardLent(ctx context.Context, node string, ref *pb.ShardRef, sc Scheme, blockSize, blockLen int, sum uint32, payload []byte, staged bool, lend func() func()) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShardTimeout)
	defer cancel()
	req := &pb.PutShardRequest{Ref: ref, DataShards: uint32(sc.K), ParityShards: uint32(sc.M),
		BlockLen: uint32(blockLen), Sum: sum, Payload: payload, Staged: staged, BlockSize: uint32(blockSize)}
	if node == s.cluster.Self() {
		return s.storeOwn(ctx, req)
	}
	peer, err := s.cluster.Shards(node, false)
	if err != nil {
		return err
	}
	if lend != nil {
		reclaim := wirecodec.Lend(req, "payload", lend())
		defer reclaim()
	}
	err = s.callPeer(ctx, node, func(ctx context.Context) error {
		_, err := peer.PutShard(ctx, req)
		return err
	})
	if err != nil {
		return fmt.Errorf("put shard %s/%d/%d on %s: %w", ref.BlobId, ref.Block, ref.Index, node, apierr.FromStatus(err))
	}
	return nil
}

// storeLocal stores a shard in this agent's files. summed says that
// req.Sum was computed from req.Payload in this process (the encoder's,
// repair's): it is trusted rather than computed again. A payload from a
// peer is checked.
func (s *Store) storeLocal(req *pb.PutShardRequest, summed bool) error {
	if err := checkShardRef(req.GetRef()); err != nil {
		return err
	}
	if err := checkShardScheme(req); err != nil {
		return err
	}
	if req.BlockSize < req.BlockLen || req.BlockLen == 0 {
		return fmt.Errorf("%w: shard %s/%d/%d: block of %d bytes with block size %d; the sender must give the blob's block size, at least the block's length (is it an older agent? upgrade it)",
			ErrInvalidArgument, req.Ref.BlobId, req.Ref.Block, req.Ref.Index, req.BlockLen, req.BlockSize)
	}
	if req.BlockSize > MaxBlockSize {
		return fmt.Errorf("%w: shard %s/%d/%d: block size %d, the largest is %d", ErrInvalidArgument, req.Ref.BlobId, req.Ref.Block, req.Ref.Index, req.BlockSize, MaxBlockSize)
	}
	// A block past the largest blob would be written that far into the
	// shard's part file.
	if uint64(req.Ref.Block)*uint64(req.BlockSize) >= uint64(s.cfg.MaxBlobSize) {
		return fmt.Errorf("%w: shard %s/%d/%d: block %d of %d-byte blocks starts past the max blob size, %d bytes",
			ErrInvalidArgument, req.Ref.BlobId, req.Ref.Block, req.Ref.Index, req.Ref.Block, req.BlockSize, s.cfg.MaxBlobSize)
	}
	h := shardstore.Header{
		ID: shardID(req.Ref), K: uint8(req.DataShards), M: uint8(req.ParityShards),
		BlockLen: req.BlockLen, ShardLen: uint32(len(req.Payload)), Sum: req.Sum, BlockSize: req.BlockSize,
	}
	put := s.shards.Put
	switch {
	case req.Staged && summed:
		put = s.shards.StageSummed
	case req.Staged:
		put = s.shards.Stage
	}
	if err := put(h, req.Payload); err != nil {
		return mapShardErr(err)
	}
	s.metrics.shardWrites.Inc()
	return nil
}

// errStoreAbandoned: a caller stopped waiting for this agent's own shard
// store to write a shard (its disk may hang in a write or a directory
// fsync). The write, which cannot be called off, goes on aside.
var errStoreAbandoned = errors.New("stopped waiting for this agent's shard disk to write a shard")

// storeOwn is storeLocal of a shard this agent encoded or rebuilt,
// waited for until ctx ends: the shard store does not heed a context,
// and a disk that hangs in a write or a directory fsync would otherwise
// hold the put or the repair for as long as it hangs. A staged shard
// whose write ends after the wait is discarded then, so that nothing of
// it stays staged and counted in the usage; one stored durably stays,
// for orphan collection.
func (s *Store) storeOwn(ctx context.Context, req *pb.PutShardRequest) error {
	ref := req.GetRef()
	_, err := s.aside(ctx, errStoreAbandoned, func() (int, error) { return 0, s.storeLocal(req, true) }, func(_ int, err error) {
		if err == nil && req.Staged {
			s.shards.Discard(shardID(ref))
		}
		s.log.Info("a write of a shard to this agent's disk that its put or repair stopped waiting for has ended; the shard is not kept staged",
			"blob_id", ref.GetBlobId(), "block", ref.GetBlock(), "shard", ref.GetIndex(), "err", err)
	})
	if errors.Is(err, errStoreAbandoned) {
		return fmt.Errorf("put shard %s/%d/%d on this agent: its shard disk (%s) did not take it in time; it may hang in writes or fsync: "+
			"check that disk (dmesg, iostat), and restart the agent if it stays stuck: %w",
			ref.GetBlobId(), ref.GetBlock(), ref.GetIndex(), s.shards.Dir(), err)
	}
	return err
}

// checkShardScheme checks the k+m of a shard a peer sends (checkScheme).
func checkShardScheme(req *pb.PutShardRequest) error {
	if err := checkScheme(req.DataShards, req.ParityShards); err != nil {
		return fmt.Errorf("%w: shard %s/%d/%d: %v", ErrInvalidArgument, req.Ref.BlobId, req.Ref.Block, req.Ref.Index, err)
	}
	return nil
}

// maxSyncShardRefs bounds the shards one SyncShards request names: 64 Ki
// refs are 5 MiB at most (with 64-digit blob ids), under the agents'
// bound on a message. A put names every shard it stored on the agent,
// one per block per index: some 380 thousand of a blob of 4 KiB blocks.
const maxSyncShardRefs = 1 << 16

// syncShards makes the shards of blob id staged on node durable and
// readable, and returns how many there were: all of them, or with refs
// only those (the others staged there stay staged), counting those that
// were staged. A list longer than maxSyncShardRefs goes to a peer in
// several requests, in the order given.
func (s *Store) syncShards(ctx context.Context, node, id string, refs []*pb.ShardRef) (int, error) {
	if node == s.cluster.Self() {
		n, err := s.commitStaged(id, refs)
		return n, mapShardErr(err)
	}
	peer, err := s.cluster.Shards(node, false)
	if err != nil {
		return 0, err
	}
	batches := [][]*pb.ShardRef{refs} // nil: every staged shard
	if len(refs) > maxSyncShardRefs {
		batches = slices.Collect(slices.Chunk(refs, maxSyncShardRefs))
	}
	total := 0
	for _, batch := range batches {
		var resp *pb.SyncShardsResponse
		err = s.callPeer(ctx, node, func(ctx context.Context) (err error) {
			resp, err = peer.SyncShards(ctx, &pb.SyncShardsRequest{BlobId: id, Shards: batch})
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("sync shards of %s on %s: %w", id, node, apierr.FromStatus(err))
		}
		total += int(resp.Shards)
	}
	return total, nil
}

// gossipPoll is how often a call to a peer looks whether this agent's
// gossip has declared the peer failed. A variable for tests.
var gossipPoll = 250 * time.Millisecond

// errPeerDown ends a call to a peer that gossip declared failed while the
// call waited.
var errPeerDown = errors.New("this agent's gossip declared it failed")

// callPeer runs fn, a call to the named peer, and ends it when this
// agent's gossip declares the peer failed while it waits (or has
// declared it failed already). A peer that is
// stopped (SIGSTOP, a paused VM) or behind a network that drops its
// packets keeps its connection open: the call would wait for its timeout
// (ShardTimeout) or the connection's keepalive (15 s), while gossip
// tells within seconds. A call cut off this way fails with errPeerDown.
func (s *Store) callPeer(ctx context.Context, node string, fn func(context.Context) error) error {
	down := func() error {
		if s.cluster.GossipDown(node) {
			return fmt.Errorf("agent %s: %w", node, errPeerDown)
		}
		return nil
	}
	if err := down(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := waitguard.Start(waitguard.Every(gossipPoll), down, func() { cancel(errPeerDown) })
	err := fn(ctx)
	if why := stop(); err != nil && why != nil {
		return why
	}
	return err
}

// commitStaged commits this agent's staged shards of blob id: all of
// them, or only refs.
func (s *Store) commitStaged(id string, refs []*pb.ShardRef) (int, error) {
	if len(refs) == 0 {
		return s.shards.CommitStaged(id)
	}
	ids := make([]shardstore.ID, len(refs))
	for i, ref := range refs {
		ids[i] = shardID(ref)
	}
	return s.shards.CommitStagedShards(id, ids)
}

// getShardInto reads one shard from node, which the blob's metadata names as
// its holder, and checks it against the checksum recorded in the metadata.
// A shard that fails the check, or that its holder does not have, is
// reported for repair and returned as ErrCorrupt or ErrNotFound, never as
// data. With waitReady, a connection still in reconnect backoff (the agent
// just restarted) is waited for, up to reconnectWait, instead of failing at
// once.
//
// The shard is read into dst when its capacity suffices (the payload
// returned is then dst resliced; nil dst: a buffer of its own): from this
// agent's files, or from a peer's answer as it arrives
// (wirecodec.WithDestination). lend lends dst's memory (readOwn); without
// it, a read from this agent's files is not made into dst.
func (s *Store) getShardInto(ctx context.Context, node string, ref *pb.ShardRef, want uint32, waitReady bool, dst []byte, lend func() func()) ([]byte, error) {
	timeout := s.cfg.ShardTimeout
	if waitReady {
		timeout = min(timeout, reconnectWait)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var payload []byte
	var got uint32 // the payload's checksum
	var err error
	if node == s.cluster.Self() {
		var h shardstore.Header
		h, payload, err = s.readOwn(ctx, shardID(ref), dst, lend)
		got = h.Sum // Get checked the payload against its header
	} else {
		peer, cerr := s.cluster.Shards(node, waitReady)
		if cerr != nil { // no answer from the holder: nothing to report
			return nil, fmt.Errorf("get shard %s/%d/%d from %s: %w", ref.BlobId, ref.Block, ref.Index, node, cerr)
		}
		var resp *pb.GetShardResponse
		if dst != nil {
			ctx = wirecodec.WithDestination(ctx, "payload", dst)
		}
		resp, err = peer.GetShard(ctx, &pb.GetShardRequest{Ref: ref})
		err = apierr.FromStatus(err)
		if err == nil {
			payload = resp.Payload
			got = codec.Checksum(payload) // a peer's bytes are checked here
		}
	}
	held := &pb.ShardRef{BlobId: ref.BlobId, Block: ref.Block, Index: ref.Index, Node: node}
	if err != nil {
		switch {
		case errors.Is(err, ErrCorrupt):
			s.reportShards([]*pb.ShardRef{held}, false)
		case errors.Is(err, ErrNotFound):
			s.reportShards([]*pb.ShardRef{held}, true)
		}
		return nil, fmt.Errorf("get shard %s/%d/%d from %s: %w", ref.BlobId, ref.Block, ref.Index, node, err)
	}
	if got != want {
		s.reportShards([]*pb.ShardRef{held}, false)
		return nil, fmt.Errorf("%w: shard %s/%d/%d on %s: checksum %08x, metadata says %08x",
			ErrCorrupt, ref.BlobId, ref.Block, ref.Index, node, got, want)
	}
	return payload, nil
}

// errReadAbandoned: a caller stopped waiting for this agent's own shard
// store to read a shard (its disk may hang in reads). The read, which
// cannot be called off, goes on aside.
var errReadAbandoned = errors.New("stopped waiting for this agent's shard disk to read a shard")

// readOwn reads shard id from this agent's files into dst (shards.Get),
// waited for until ctx ends: a disk that hangs in reads would otherwise
// hold the read, and the blob get, for as long as it hangs. The errors
// are mapReadErr's. A read waited for no longer goes on aside and may
// write into dst later: dst is read into only with lend, a loan of its
// memory (bufpool.Shared.Lend) that the read holds until it ends, so that
// the memory goes back to the pool only then; without lend the read is
// made into a buffer of its own.
func (s *Store) readOwn(ctx context.Context, id shardstore.ID, dst []byte, lend func() func()) (shardstore.Header, []byte, error) {
	var loan func()
	if dst != nil && lend != nil {
		loan = lend()
	} else {
		dst = nil
	}
	var h shardstore.Header
	var payload []byte
	_, err := s.aside(ctx, errReadAbandoned, func() (int, error) {
		var err error
		h, payload, err = s.shards.Get(id, dst)
		if loan != nil {
			loan()
		}
		return 0, err
	}, nil)
	switch {
	case errors.Is(err, errReadAbandoned):
		return shardstore.Header{}, nil, fmt.Errorf("this agent's shard disk (%s) did not read the shard in time; it may hang in reads: "+
			"check that disk (dmesg, iostat), and restart the agent if it stays stuck: %w", s.shards.Dir(), err)
	case err != nil && loan != nil && (errors.Is(err, errClosed) || errors.As(err, new(*diskHungError))):
		loan() // the read did not start
	}
	if err != nil {
		return shardstore.Header{}, nil, s.mapReadErr(err)
	}
	return h, payload, nil
}

// mapReadErr is mapShardErr for the error of a read of a local shard. A
// read the disk failed (EIO) is also counted and warned of, once a minute
// at most: the shard is corrupt to the caller, reported and rebuilt from
// the others, but a disk that fails reads is failing, and only its
// operator can replace it.
func (s *Store) mapReadErr(err error) error {
	if !errors.Is(err, syscall.EIO) {
		return mapShardErr(err)
	}
	s.metrics.shardIOErrors.Inc()
	if pass, held := s.ioWarned.Seen("shards"); pass {
		s.log.Warn("the disk failed to read a shard; it is rebuilt from the other shards, but a disk that fails reads is failing: "+
			"check it (dmesg, SMART) and replace it if this goes on (zrpc_blob_shard_io_errors_total counts them)",
			"err", err, "more_since_last_warning", held)
	}
	return mapShardErr(err)
}

// reportShards tells the leader's repair, in the background, about copies
// of shards that are corrupt, or lost (their holder has no file for them).
// Each ref names the agent holding the copy: repair rewrites a copy only
// while the metadata still names that agent as the shard's holder.
func (s *Store) reportShards(refs []*pb.ShardRef, lost bool) {
	what := "corrupt"
	if lost {
		what = "lost"
		s.metrics.lostShards.Add(float64(len(refs)))
	} else {
		s.metrics.corruptShards.Add(float64(len(refs)))
	}
	refs = s.reported.fresh(refs, time.Now(), s.cfg.RepairInterval)
	if len(refs) == 0 {
		return
	}
	if lost {
		marked := make([]*pb.ShardRef, len(refs))
		for i, r := range refs {
			marked[i] = &pb.ShardRef{BlobId: r.BlobId, Block: r.Block, Index: r.Index, Node: r.Node, Lost: true}
		}
		refs = marked
	}
	first := refs[0]
	s.log.Warn(what+" shards found; reporting them for repair", "shards", len(refs),
		"blob_id", first.BlobId, "block", first.Block, "shard", first.Index, "agent", first.Node)
	req := &pb.ReportShardsRequest{Corrupt: refs, Reporter: s.cluster.Self()}
	if !s.track() { // the agent is stopping: the scrubber finds them again
		s.reported.forget(refs)
		return
	}
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		defer cancel()
		if err := s.cluster.Leader().ReportShards(ctx, req); err != nil {
			s.reported.forget(refs)
			s.log.Warn("could not report "+what+" shards; the scrubber will find them again", "shards", len(refs), "err", err)
		}
	}()
}

// recentReports remembers the copies of shards this agent reported to the
// leader lately. Every read of a block that stays damaged finds the same
// copies corrupt or lost; without it each read repeated the warning and
// the report (and woke the leader's repair scan), as often as clients read.
type recentReports struct {
	mu sync.Mutex
	at map[copyKey]time.Time
}

// maxRecentReports is the size of recentReports past which each call
// first drops the entries older than the report interval (the copies
// reported within one interval stay, however many).
const maxRecentReports = 4096

// fresh returns the refs not reported within every before now, and notes
// them as reported now.
func (rr *recentReports) fresh(refs []*pb.ShardRef, now time.Time, every time.Duration) []*pb.ShardRef {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if rr.at == nil {
		rr.at = make(map[copyKey]time.Time)
	}
	if len(rr.at) > maxRecentReports {
		for k, at := range rr.at {
			if now.Sub(at) >= every {
				delete(rr.at, k)
			}
		}
	}
	var out []*pb.ShardRef
	for _, ref := range refs {
		k := reportKey(ref)
		if at, ok := rr.at[k]; ok && now.Sub(at) < every {
			continue
		}
		rr.at[k] = now
		out = append(out, ref)
	}
	return out
}

// forget drops refs, whose report did not reach the leader: the next read
// that finds them reports them again.
func (rr *recentReports) forget(refs []*pb.ShardRef) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	for _, ref := range refs {
		delete(rr.at, reportKey(ref))
	}
}

func reportKey(ref *pb.ShardRef) copyKey {
	return copyKey{shardKey{ref.BlobId, ref.Block, ref.Index}, ref.GetNode()}
}

// maxDeleteShardIDs bounds the blob ids of one DeleteShards request:
// senders split longer lists, and an agent refuses a longer one before it
// looks at any.
const maxDeleteShardIDs = 4096

// deletePeersAtOnce is how many agents deleteShardsOn asks at once.
const deletePeersAtOnce = 8

// deleteShardsOn asks each node to delete the shards of blob ids that no
// blob refers to as of revision rev. The agents are asked concurrently
// (deletePeersAtOnce at a time), each within ShardTimeout: one that hangs
// (a stopped agent, a disk hung in a delete) costs only its own delete,
// not those of the agents after it. An agent not reached collects the
// shards itself later.
func (s *Store) deleteShardsOn(ctx context.Context, nodes, ids []string, rev uint64) {
	slots := make(chan struct{}, deletePeersAtOnce)
	var wg sync.WaitGroup
	for _, node := range nodes {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := s.deleteShardsAt(ctx, node, ids, rev); err != nil {
				s.log.Info("shard delete not delivered; the agent collects them itself later", "agent", node, "err", err)
			}
		})
	}
	wg.Wait()
}

// errDeleteAbandoned: a caller stopped waiting for this agent's own
// shard store to delete shards (a write of the blob's that hangs on the
// disk holds the blob's lock). The delete goes on aside.
var errDeleteAbandoned = errors.New("stopped waiting for this agent's shard disk to delete shards")

// deleteShardsAt asks node to delete the shards of blob ids that no blob
// refers to as of revision rev, within ShardTimeout: this agent too,
// whose shard store does not heed a context.
func (s *Store) deleteShardsAt(ctx context.Context, node string, ids []string, rev uint64) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShardTimeout)
	defer cancel()
	if node == s.cluster.Self() {
		del := func() (int, error) { return s.deleteUnreferenced(ctx, ids, rev), nil }
		_, err := s.aside(ctx, errDeleteAbandoned, del, nil)
		if errors.Is(err, errClosed) {
			// Closing: no goroutine may start; the caller (a background
			// delete Close waits for, or a call still running) deletes
			// here, unbounded.
			_, err = del()
		}
		return err
	}
	peer, err := s.cluster.Shards(node, false)
	if err != nil {
		return err
	}
	for batch := range slices.Chunk(ids, maxDeleteShardIDs) {
		err := s.callPeer(ctx, node, func(ctx context.Context) error {
			_, err := peer.DeleteShards(ctx, &pb.DeleteShardsRequest{BlobIds: batch, Revision: rev})
			return err
		})
		if err != nil {
			return fmt.Errorf("delete shards of %d blobs on %s: %w", len(batch), node, apierr.FromStatus(err))
		}
	}
	return nil
}

// deleteUnreferenced deletes the local shards of blob ids once this replica
// has applied rev, unless a blob or a pending put still refers to them.
func (s *Store) deleteUnreferenced(ctx context.Context, ids []string, rev uint64) int {
	if err := s.waitRevision(ctx, rev, 2*time.Second); err != nil {
		return 0
	}
	meta := s.cluster.Meta()
	deleted := 0
	for _, id := range ids {
		if !ValidBlobID(id) || meta.BlobByID(id) != nil || meta.PendingBlob(id) != nil {
			continue
		}
		n, err := s.shards.DeleteBlob(id)
		if err != nil {
			s.log.Warn("delete shards", "blob_id", id, "err", err)
		}
		deleted += n
	}
	if deleted > 0 {
		s.metrics.shardsCollected.Add(float64(deleted))
	}
	return deleted
}

var blobIDPattern = regexp.MustCompile(`^[0-9a-f]{16,64}$`)

// ValidBlobID reports whether id has the form of a blob id (16 to 64
// lowercase hex digits), as agents check ids that peers send.
func ValidBlobID(id string) bool { return blobIDPattern.MatchString(id) }

func checkShardRef(ref *pb.ShardRef) error {
	if ref == nil || !ValidBlobID(ref.BlobId) || ref.Index > 255 {
		return fmt.Errorf("%w: shard reference %v", ErrInvalidArgument, ref)
	}
	return nil
}

// mapShardErr turns shard store errors into API sentinels.
func mapShardErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, shardstore.ErrNotFound):
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	case errors.Is(err, shardstore.ErrCorrupt):
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	case errors.Is(err, shardstore.ErrNoSpace):
		return fmt.Errorf("%w: %v", apierr.ErrNoSpace, err)
	case errors.Is(err, shardstore.ErrInvalidID), errors.Is(err, shardstore.ErrInvalidHeader):
		return fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	return err
}

// ShardServer serves the Shards API to peers.
type ShardServer struct {
	pb.UnimplementedShardsServer
	s *Store
}

// ShardServer returns the gRPC server of this agent's shards.
func (s *Store) ShardServer() *ShardServer { return &ShardServer{s: s} }

// PutShard stores a peer's shard, waited for within ShardTimeout and the
// caller's deadline (aside): a disk that hangs must not keep the handler
// past its caller. The write goes on aside when the wait ends, and the
// payload, which gRPC frees when the handler returns (it is borrowed,
// internal/wirecodec), is written from a copy the write owns.
func (ss *ShardServer) PutShard(ctx context.Context, req *pb.PutShardRequest) (*pb.PutShardResponse, error) {
	s := ss.s
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShardTimeout)
	defer cancel()
	if err := s.diskHung(); err != nil {
		return nil, err
	}
	own := bufpool.Get(len(req.GetPayload()))
	copy(*own, req.GetPayload())
	put := &pb.PutShardRequest{Ref: req.GetRef(), DataShards: req.GetDataShards(), ParityShards: req.GetParityShards(),
		BlockLen: req.GetBlockLen(), Sum: req.GetSum(), Payload: *own, Staged: req.GetStaged(), BlockSize: req.GetBlockSize()}
	ref := put.GetRef()
	_, err := s.aside(ctx, errStoreAbandoned, func() (int, error) {
		err := s.storeLocal(put, false)
		bufpool.Put(own)
		return 0, err
	}, func(_ int, err error) {
		s.log.Info("a write of a peer's shard to this agent's disk that the peer stopped waiting for has ended",
			"blob_id", ref.GetBlobId(), "block", ref.GetBlock(), "shard", ref.GetIndex(), "err", err)
	})
	if errors.Is(err, errStoreAbandoned) {
		return nil, fmt.Errorf("put shard %s/%d/%d on agent %s: its shard disk (%s) did not take it in time; it may hang in writes or fsync: "+
			"check that disk (dmesg, iostat), and restart the agent if it stays stuck: %w",
			ref.GetBlobId(), ref.GetBlock(), ref.GetIndex(), s.cluster.Self(), s.shards.Dir(), err)
	}
	if err != nil {
		if errors.Is(err, errClosed) || errors.As(err, new(*diskHungError)) {
			bufpool.Put(own) // the write did not start
		}
		return nil, err
	}
	return &pb.PutShardResponse{}, nil
}

func (ss *ShardServer) SyncShards(ctx context.Context, req *pb.SyncShardsRequest) (*pb.SyncShardsResponse, error) {
	start := time.Now()
	if !ValidBlobID(req.BlobId) {
		return nil, fmt.Errorf("%w: blob id %q", ErrInvalidArgument, req.BlobId)
	}
	for _, ref := range req.Shards {
		if err := checkShardRef(ref); err != nil {
			return nil, err
		}
		if ref.BlobId != req.BlobId {
			return nil, fmt.Errorf("%w: shard %s/%d/%d listed in a sync of blob %s: list only that blob's shards",
				ErrInvalidArgument, ref.BlobId, ref.Block, ref.Index, req.BlobId)
		}
	}
	// Waited for within the caller's deadline, or, without one, as long
	// as a put's sync of what is staged (syncWithin), counted from the
	// handler's start: a disk that hangs in fsync must not keep the
	// handler past its caller. StagedSize does not wait for the disk.
	s := ss.s
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, start.Add(s.syncWithin(s.shards.StagedSize(req.BlobId))))
		defer cancel()
	}
	n, err := s.commitAside(ctx, func() (int, error) { return s.commitStaged(req.BlobId, req.Shards) }, nil)
	if errors.Is(err, errCommitAbandoned) {
		return nil, fmt.Errorf("sync shards of %s on agent %s: its shard disk (%s) did not make them durable in time; it may hang in fsync: "+
			"check that disk (dmesg, iostat), and restart the agent if it stays stuck: %w", req.BlobId, s.cluster.Self(), s.shards.Dir(), err)
	}
	if err != nil {
		return nil, mapShardErr(err)
	}
	return &pb.SyncShardsResponse{Shards: uint32(n)}, nil
}

func (ss *ShardServer) GetShard(ctx context.Context, req *pb.GetShardRequest) (*pb.GetShardResponse, error) {
	if err := checkShardRef(req.GetRef()); err != nil {
		return nil, err
	}
	// A buffer of its own, never reused: gRPC writes a GetShardResponse's
	// payload by reference (internal/wirecodec), after this returns. The
	// read is waited for within ShardTimeout and the caller's deadline.
	ctx, cancel := context.WithTimeout(ctx, ss.s.cfg.ShardTimeout)
	defer cancel()
	h, payload, err := ss.s.readOwn(ctx, shardID(req.Ref), nil, nil)
	if err != nil {
		return nil, err
	}
	ss.s.metrics.shardReads.Inc()
	return &pb.GetShardResponse{Sum: h.Sum, Payload: payload}, nil
}

func (ss *ShardServer) DeleteShards(ctx context.Context, req *pb.DeleteShardsRequest) (*pb.DeleteShardsResponse, error) {
	if len(req.BlobIds) > maxDeleteShardIDs {
		return nil, fmt.Errorf("%w: DeleteShards names %d blob ids; at most %d at once", ErrInvalidArgument, len(req.BlobIds), maxDeleteShardIDs)
	}
	// Waited for within ShardTimeout and the caller's deadline: a write
	// of the blob's that hangs on the disk holds the blob's lock.
	s := ss.s
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShardTimeout)
	defer cancel()
	n, err := s.aside(ctx, errDeleteAbandoned, func() (int, error) { return s.deleteUnreferenced(ctx, req.BlobIds, req.Revision), nil }, nil)
	if errors.Is(err, errDeleteAbandoned) {
		return nil, fmt.Errorf("delete shards of %d blobs on agent %s: its shard disk (%s) did not delete them in time (a write of one of them may hang on it): "+
			"check that disk (dmesg, iostat), and restart the agent if it stays stuck; the agent collects them itself later: %w",
			len(req.BlobIds), s.cluster.Self(), s.shards.Dir(), err)
	}
	if err != nil {
		return nil, err
	}
	return &pb.DeleteShardsResponse{Deleted: uint32(n)}, nil
}

func (ss *ShardServer) ReportShards(ctx context.Context, req *pb.ReportShardsRequest) (*pb.ReportShardsResponse, error) {
	if !ss.s.cluster.IsLeader() {
		return nil, apierr.ErrNotLeader
	}
	for _, ref := range req.Corrupt {
		if err := checkShardRef(ref); err != nil {
			return nil, err
		}
	}
	if err := ss.s.LocalLeader().ReportShards(ctx, req); err != nil {
		return nil, err
	}
	return &pb.ReportShardsResponse{}, nil
}

func (ss *ShardServer) Referenced(ctx context.Context, req *pb.ReferencedRequest) (*pb.ReferencedResponse, error) {
	if !ss.s.cluster.IsLeader() {
		return nil, apierr.ErrNotLeader
	}
	referenced, err := ss.s.LocalLeader().Referenced(ctx, req)
	if err != nil {
		return nil, err
	}
	return &pb.ReferencedResponse{Referenced: referenced}, nil
}
