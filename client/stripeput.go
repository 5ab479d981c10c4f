package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/wirecodec"
	"github.com/zrpcio/zrpc/storage/codec"
)

// putWindow is how many blocks a client-striped put holds at once:
// memory ≈ putWindow × block size × (k+m)/k, whatever the blob's size.
const putWindow = 4

// Bounds on what an agent's BeginPut may ask this client to hold in
// memory: far above what agents use (blocks of at most 8 MiB, inline
// blobs of at most 1 MiB), so that only a broken answer is refused.
const (
	maxStripeBlock = 64 << 20
	maxInline      = 16 << 20
)

// abortTimeout bounds the AbortPut of a failed put; the put's lease is the
// backstop when it does not get through.
const abortTimeout = 10 * time.Second

// stripePut is one client-striped put in progress: the client encodes the
// blob itself and streams shard index i of every block to its agent (one
// WriteShards stream per index), then commits the metadata the agents
// confirmed through any agent.
//
// Goroutines: the caller's reads and encodes blocks; one hashes them
// (SHA-256 of the whole blob, beside encoding); one per shard index sends
// them (shardSender); one renews the put's lease. run owns them all and
// returns only after they stopped.
type stripePut struct {
	c        *Client
	hdr      *zrpcpb.BlobPutHeader
	begin    *zrpcpb.BeginPutResponse
	codec    *codec.Codec
	k, m     int
	need     int // shards of a block that must be stored: k+1 (k when m = 0)
	progress func(sent int64)

	// ctx ends when the put fails (its cause says why) or its caller's
	// context ends; the shard streams and renewals run in it.
	ctx  context.Context
	fail context.CancelCauseFunc

	window chan struct{} // a slot per block held
	sha    hash.Hash     // written by the hashing goroutine only

	mu     sync.Mutex
	spares []*zrpcpb.AgentAddress // not given to an index yet
	avail  []int                  // per block: shards not known lost
	lens   []uint32               // per block: its length
	sums   [][]uint32             // per block: the CRC32C of each shard
	size   uint64                 // bytes read so far

	progressMu sync.Mutex
	sent       int64 // bytes whose every shard was sent
}

// putBlock is one block in flight: its shards, and how many of the
// hashing goroutine and the shard senders still use them.
type putBlock struct {
	p     *stripePut
	index uint32
	n     int // block length
	blk   *codec.Block
	users atomic.Int32
}

// done is called by each user of the block once it no longer needs it; the
// last one releases the block and its window slot.
func (b *putBlock) done() {
	if b.users.Add(-1) != 0 {
		return
	}
	b.blk.Release()
	if b.p.ctx.Err() == nil { // a failed put's blocks were not all sent
		b.p.reportSent(int64(b.n))
	}
	<-b.p.window
}

func (p *stripePut) reportSent(n int64) {
	p.progressMu.Lock()
	defer p.progressMu.Unlock()
	p.sent += n
	if p.progress != nil {
		p.progress(p.sent)
	}
}

// beginPut asks the cluster for a placement and a lease for a put of hdr.
// Every attempt carries one request id, so a retry after a lost answer
// gets the put the first attempt began instead of beginning another.
func (c *Client) beginPut(ctx context.Context, hdr *zrpcpb.BlobPutHeader) (*zrpcpb.BeginPutResponse, error) {
	var resp *zrpcpb.BeginPutResponse
	req := &zrpcpb.BeginPutRequest{Header: hdr, RequestId: newRequestID()}
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = zrpcpb.NewBlobsClient(ep.conn).BeginPut(ctx, req)
		return err
	})
	return resp, err
}

// newStripePut checks the placement an agent answered and prepares the
// put; it starts nothing.
func (c *Client) newStripePut(hdr *zrpcpb.BlobPutHeader, begin *zrpcpb.BeginPutResponse, progress func(int64)) (*stripePut, error) {
	k, m := int(begin.GetDataShards()), int(begin.GetParityShards())
	bs := begin.GetBlockSize()
	switch {
	case begin.GetBlobId() == "":
		return nil, fmt.Errorf("put %q: the agent's placement has no blob id", hdr.Name)
	case k < 1 || k+m > codec.MaxShards:
		return nil, fmt.Errorf("put %q: the agent's placement has %d+%d shards: want at least 1 data shard and at most %d in all",
			hdr.Name, k, m, codec.MaxShards)
	case len(begin.GetTargets()) != k+m:
		return nil, fmt.Errorf("put %q: the agent's placement names %d targets for %d+%d shards", hdr.Name, len(begin.GetTargets()), k, m)
	case bs == 0 || bs > maxStripeBlock:
		return nil, fmt.Errorf("put %q: the agent's placement has a block size of %d bytes: want 1 to %d", hdr.Name, bs, maxStripeBlock)
	case begin.GetInlineMax() > maxInline:
		return nil, fmt.Errorf("put %q: the agent stores blobs of up to %d bytes inline: want at most %d", hdr.Name, begin.GetInlineMax(), maxInline)
	case (hdr.DataShards != 0 || hdr.ParityShards != 0) && (k != int(hdr.DataShards) || m != int(hdr.ParityShards)):
		// An explicit scheme is the agents' to refuse, never to change.
		return nil, fmt.Errorf("put %q: the agent's placement has %d+%d shards, the put asked for %d+%d", hdr.Name, k, m, hdr.DataShards, hdr.ParityShards)
	}
	cd, err := codec.New(k, m)
	if err != nil {
		return nil, fmt.Errorf("put %q: %w", hdr.Name, err)
	}
	need := k + 1
	if m == 0 {
		need = k
	}
	return &stripePut{
		c: c, hdr: hdr, begin: begin, codec: cd, k: k, m: m, need: need, progress: progress,
		window: make(chan struct{}, putWindow),
		sha:    sha256.New(),
		spares: append([]*zrpcpb.AgentAddress(nil), begin.GetSpares()...),
	}, nil
}

// run sends the blob read from r and commits it. A blob that turns out to
// be small enough to be stored inline is sent through an agent's Put
// instead.
func (p *stripePut) run(ctx context.Context, r io.Reader) (*zrpcpb.BlobPutResponse, error) {
	p.ctx, p.fail = context.WithCancelCause(ctx)
	defer p.fail(nil)
	p.c.cancelOnClose(p.ctx, p.fail)

	// The lease is renewed from the start: a source that is slow to
	// give its first bytes (a pipe from a command still working) must
	// not let it end while the head is read.
	renewed := make(chan struct{})
	stopRenewing := make(chan struct{})
	go func() {
		defer close(renewed)
		p.renew(stopRenewing)
	}()
	stopRenewal := sync.OnceFunc(func() {
		close(stopRenewing)
		<-renewed
	})
	defer stopRenewal()

	src := r
	if p.hdr.Size == 0 {
		// Size unknown: learn first whether the blob is larger than what
		// agents store inline.
		head := make([]byte, int(p.begin.GetInlineMax())+1)
		n, err := io.ReadFull(r, head)
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			stopRenewal()
			p.abort(ctx)
			return p.c.putThroughAgent(ctx, p.hdr, bytes.NewReader(head[:n]), p.progress)
		case err != nil:
			p.abort(ctx)
			return nil, fmt.Errorf("read blob %q: %w", p.hdr.Name, err)
		}
		src = io.MultiReader(bytes.NewReader(head), r)
	}
	return p.stripe(ctx, src)
}

// stripe sends every block and commits; on failure it aborts the put.
func (p *stripePut) stripe(ctx context.Context, src io.Reader) (*zrpcpb.BlobPutResponse, error) {
	senders := make([]*shardSender, p.k+p.m)
	var wg sync.WaitGroup
	for i := range senders {
		s := &shardSender{p: p, index: uint32(i), target: p.begin.Targets[i], blocks: make(chan *putBlock, putWindow)}
		senders[i] = s
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run()
		}()
	}
	hashing := make(chan *putBlock, putWindow)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for b := range hashing {
			p.sha.Write(b.blk.Data()[:b.n])
			b.done()
		}
	}()
	err := p.readBlocks(src, hashing, senders)
	if err != nil {
		p.fail(err) // stop the streams: the put is over
	}
	close(hashing)
	for _, s := range senders {
		close(s.blocks)
	}
	wg.Wait()
	if err == nil {
		err = context.Cause(p.ctx)
	}
	if err == nil {
		return p.commit(ctx, senders)
	}
	p.abort(ctx)
	if ctx.Err() != nil {
		return nil, fmt.Errorf("put %q: %w", p.hdr.Name, context.Cause(ctx))
	}
	return nil, err
}

// readBlocks reads src block by block, encodes each block and hands it to
// the hashing goroutine and to every shard sender, holding at most
// putWindow blocks.
func (p *stripePut) readBlocks(src io.Reader, hashing chan<- *putBlock, senders []*shardSender) error {
	bs := int(p.begin.GetBlockSize())
	for index := uint32(0); ; index++ {
		select {
		case p.window <- struct{}{}:
		case <-p.ctx.Done():
			return context.Cause(p.ctx)
		}
		blk := p.codec.NewBlock(bs)
		n, err := io.ReadFull(src, blk.Data()[:bs])
		last := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
		switch {
		case err != nil && !last:
			err = fmt.Errorf("read blob %q: %w", p.hdr.Name, err)
		case n > 0:
			if err = p.account(n); err == nil {
				err = p.codec.Encode(blk, n)
			}
		default:
			err = nil
		}
		if err != nil || n == 0 {
			blk.Release()
			<-p.window
			if err != nil {
				return err
			}
			return p.checkSize()
		}
		b := &putBlock{p: p, index: index, n: n, blk: blk}
		b.users.Store(int32(len(senders) + 1))
		p.mu.Lock()
		p.avail = append(p.avail, len(senders))
		p.lens = append(p.lens, uint32(n))
		p.sums = append(p.sums, append([]uint32(nil), blk.Sums()...))
		p.mu.Unlock()
		hashing <- b
		for _, s := range senders {
			s.blocks <- b
		}
		if last {
			return p.checkSize()
		}
	}
}

// account adds n bytes read and checks them against the size the caller
// gave and against what one blob's metadata can describe.
func (p *stripePut) account(n int) error {
	p.mu.Lock()
	p.size += uint64(n)
	size, blocks := p.size, len(p.lens)+1
	p.mu.Unlock()
	if p.hdr.Size > 0 && size > uint64(p.hdr.Size) {
		return fmt.Errorf("%w: blob %q: size given as %d bytes, the reader holds more", apierr.ErrInvalidArgument, p.hdr.Name, p.hdr.Size)
	}
	// The agents' bound on a blob's metadata (one Raft entry): per block,
	// 6 bytes per shard and 16 of length and framing; 32 KiB per blob.
	limit := p.begin.GetMaxMetadataBytes()
	if need := uint64(blocks)*uint64(6*(p.k+p.m)+16) + 32<<10; limit > 0 && need > limit {
		return fmt.Errorf("%w: blob %q: more than %d bytes in %d-byte blocks of %d shards need more metadata than the %d bytes one blob may have: "+
			"use a larger block size (the agents' --blob-block-size), fewer shards, or split the blob",
			apierr.ErrInvalidArgument, p.hdr.Name, size, p.begin.GetBlockSize(), p.k+p.m, limit)
	}
	return nil
}

// checkSize checks, at the end of the reader, that it held the size given.
func (p *stripePut) checkSize() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hdr.Size > 0 && p.size != uint64(p.hdr.Size) {
		return fmt.Errorf("%w: blob %q: size given as %d bytes, the reader held %d", apierr.ErrInvalidArgument, p.hdr.Name, p.hdr.Size, p.size)
	}
	return nil
}

// nextSpare returns the next agent not yet given to a shard index, or nil.
func (p *stripePut) nextSpare() *zrpcpb.AgentAddress {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.spares) > 0 {
		a := p.spares[0]
		p.spares = p.spares[1:]
		if a.GetNode() != "" && a.GetAddress() != "" {
			return a
		}
	}
	return nil
}

// lose records that shard index of each of blocks will not be stored, and
// fails the put when one of those blocks is left with fewer than need
// shards. why says what became of the shards.
func (p *stripePut) lose(index uint32, blocks []uint32, why error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range blocks {
		p.avail[b]--
		if p.avail[b] < p.need {
			p.fail(lostShards{fmt.Errorf("%w: put %q: block %d keeps %d of %d shards, it needs %d: shard %d: %w",
				apierr.ErrNotEnoughShards, p.hdr.Name, b, p.avail[b], p.k+p.m, p.need, index, why)})
			return
		}
	}
}

// lostShards is the error of a put that lost shards it needed with an
// agent that failed (or could not be reached): the put is aborted, and
// PutBlob may start it over (errPutLostShards).
type lostShards struct{ error }

func (e lostShards) Unwrap() error        { return e.error }
func (e lostShards) Is(target error) bool { return target == errPutLostShards }

// renew extends the put's lease every third of it until stop is closed or
// the put ends. A put whose lease could not be renewed for longer than the
// lease is lost (the leader aborts it): renew fails it.
func (p *stripePut) renew(stop <-chan struct{}) {
	ttl := time.Duration(p.begin.GetLeaseTtlMs()) * time.Millisecond
	if ttl <= 0 {
		return
	}
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	renewed := time.Now()
	req := &zrpcpb.RenewPutRequest{Name: p.hdr.Name, BlobId: p.begin.BlobId}
	for {
		select {
		case <-stop:
			return
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(p.ctx, ttl/3)
		err := p.c.call(ctx, func(ctx context.Context, ep *endpoint) error {
			_, err := zrpcpb.NewBlobsClient(ep.conn).RenewPut(ctx, req)
			return err
		})
		cancel()
		switch {
		case err == nil:
			renewed = time.Now()
			continue
		case p.ctx.Err() != nil:
			return
		case errors.Is(err, apierr.ErrNotFound):
			p.fail(fmt.Errorf("put %q: the cluster ended it (its lease expired?): %w; put it again", p.hdr.Name, err))
			return
		case !retryable(err) && status.Code(err) != codes.DeadlineExceeded && !errors.Is(err, context.DeadlineExceeded):
			p.fail(fmt.Errorf("put %q: renew its lease: %w", p.hdr.Name, err))
			return
		case time.Since(renewed) > ttl:
			p.fail(fmt.Errorf("put %q: its lease could not be renewed for %s, longer than the lease (%s), so the cluster aborts it: %w; put it again",
				p.hdr.Name, time.Since(renewed).Round(time.Millisecond), ttl, err))
			return
		}
		p.c.log.Warn("renewing a put's lease failed; retrying", "blob", p.hdr.Name, "id", p.begin.BlobId, "err", err)
	}
}

// abort ends the put without a blob, best effort: the agents collect its
// shards, and the lease ends a put whose abort does not get through.
func (p *stripePut) abort(ctx context.Context) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	req := &zrpcpb.AbortPutRequest{Name: p.hdr.Name, BlobId: p.begin.BlobId}
	err := p.c.call(actx, func(ctx context.Context, ep *endpoint) error {
		_, err := zrpcpb.NewBlobsClient(ep.conn).AbortPut(ctx, req)
		return err
	})
	if err != nil {
		p.c.log.Warn("aborting a failed put did not get through; its lease will end it", "blob", p.hdr.Name, "id", p.begin.BlobId, "err", err)
	}
}

// minCommitRetry is the least time a put's commit is sent again for when
// it finds no leader or its answer is lost (the lease's, when longer).
const minCommitRetry = 5 * time.Second

// commit builds the blob's metadata from the shards the agents confirmed
// and commits it through any agent.
func (p *stripePut) commit(ctx context.Context, senders []*shardSender) (*zrpcpb.BlobPutResponse, error) {
	blob, err := p.metadata(senders)
	if err != nil {
		p.abort(ctx)
		return nil, err
	}
	// Every attempt sends the same request: the agents apply a commit
	// once, and answer a repeat of one that applied with its blob. So a
	// commit that finds no leader, or whose answer is lost, is sent again
	// for as long as the put's lease is kept (renew gives up, failing the
	// put, once it could not renew it for longer than the lease), at most
	// one lease's time, or while the caller waits.
	req := &zrpcpb.CommitPutRequest{Blob: blob, Overwrite: p.hdr.Overwrite, RequestId: newRequestID()}
	var resp *zrpcpb.BlobPutResponse
	proposed := false // an attempt may have reached a leader
	giveUp := time.Now().Add(max(time.Duration(p.begin.GetLeaseTtlMs())*time.Millisecond, minCommitRetry))
	for attempt := 0; ; attempt++ {
		// The agent asks each holder what it holds, waiting on a slow
		// one longer than an attempt's bound.
		err = p.c.callSlow(ctx, func(ctx context.Context, ep *endpoint) (err error) {
			resp, err = zrpcpb.NewBlobsClient(ep.conn).CommitPut(ctx, req)
			return err
		})
		if err == nil {
			return resp, nil
		}
		ambiguous := errors.Is(err, apierr.ErrOutcomeUnknown) || retryable(err) || status.Code(err) == codes.DeadlineExceeded
		if !ambiguous || ctx.Err() != nil {
			break
		}
		// An agent that found no leader proposed nothing.
		proposed = proposed || !errors.Is(err, apierr.ErrNoLeader)
		if p.ctx.Err() != nil || time.Now().After(giveUp) {
			break // the lease is lost (or the put failed otherwise)
		}
		p.c.log.Warn("a put's commit did not get through; sending it again", "blob", p.hdr.Name, "id", p.begin.BlobId, "attempt", attempt+1, "err", err)
		select {
		case <-ctx.Done():
		case <-p.ctx.Done():
		case <-time.After(backoffDelay(attempt)):
		}
	}
	switch {
	case errors.Is(err, apierr.ErrOutcomeUnknown):
		return nil, err
	case !proposed && errors.Is(err, apierr.ErrNoLeader):
		p.abort(ctx)
		return nil, fmt.Errorf("put %q was not stored: its commit found no cluster leader (%w); put it again once the cluster has a leader (`zrpcctl status`)",
			p.hdr.Name, err)
	case ctx.Err() != nil || retryable(err) || status.Code(err) == codes.DeadlineExceeded:
		// The commit may have been proposed: no answer says whether it
		// applied, and an abort now could not tell either.
		return nil, fmt.Errorf("put %q: %w: the commit's answer was lost (%w) after the whole blob was stored on the agents; "+
			"`zrpcctl blob stat %s` shows whether it was stored", p.hdr.Name, apierr.ErrOutcomeUnknown, err, p.hdr.Name)
	}
	p.abort(ctx)
	return nil, fmt.Errorf("put %q: commit: %w", p.hdr.Name, err)
}

// metadata is the blob as the agents confirmed it: a shard no agent
// confirmed with its checksum is missing (holder 0), left to repair.
func (p *stripePut) metadata(senders []*shardSender) (*zrpcpb.Blob, error) {
	blob := &zrpcpb.Blob{
		Name: p.hdr.Name, Id: p.begin.BlobId, Size: p.size,
		DataShards: uint32(p.k), ParityShards: uint32(p.m), BlockSize: p.begin.BlockSize,
		Sha256: p.sha.Sum(nil), Blocks: make([]*zrpcpb.BlobBlock, len(p.lens)),
	}
	for b := range blob.Blocks {
		blob.Blocks[b] = &zrpcpb.BlobBlock{Holders: make([]uint32, p.k+p.m), Sums: p.sums[b], Len: p.lens[b]}
	}
	for i, s := range senders {
		for _, held := range s.held {
			ref := uint32(0)
			for j, b := range held.blocks {
				if int(b) >= len(blob.Blocks) || held.sums[j] != p.sums[b][i] {
					continue // not a shard this put sent
				}
				if ref == 0 {
					ref = blob.HolderRef(held.agent)
				}
				blob.Blocks[b].Holders[i] = ref
			}
		}
	}
	for b, blk := range blob.Blocks {
		stored := 0
		for _, h := range blk.Holders {
			if h != 0 {
				stored++
			}
		}
		if stored < p.need {
			return nil, lostShards{fmt.Errorf("%w: put %q: the agents confirmed %d of the %d shards of block %d, it needs %d",
				apierr.ErrNotEnoughShards, p.hdr.Name, stored, p.k+p.m, b, p.need)}
		}
	}
	return blob, nil
}

// shardSender sends one shard index of every block to its agent over one
// WriteShards stream; when that agent fails, the blocks still to come go
// to the next spare agent on a new stream, and the ones it had taken are
// lost (repair stores them once the blob is committed).
type shardSender struct {
	p      *stripePut
	index  uint32
	blocks chan *putBlock

	target *zrpcpb.AgentAddress // the placement's agent for this index, tried first
	tried  bool                 // target was tried: later streams go to spares
	agent  *zrpcpb.AgentAddress // the stream's agent
	conn   *grpc.ClientConn     // the connection to agent
	stream zrpcpb.Blobs_WriteShardsClient
	cancel context.CancelFunc // ends stream
	sent   []uint32           // blocks sent on stream
	none   bool               // no agent is left for this index

	held []heldShards // what each agent confirmed, once its stream closed
}

// heldShards are the blocks (and their shards' checksums) of one shard
// index an agent confirmed it holds durably.
type heldShards struct {
	agent  string
	blocks []uint32
	sums   []uint32
}

func (s *shardSender) run() {
	// Open the stream while the first block is read and encoded: the
	// connection's setup (a dial, the first time) overlaps them instead of
	// following them. (open tries nothing once the put has ended; a
	// failure here is met again by send.)
	s.open()
	for b := range s.blocks {
		if s.p.ctx.Err() == nil {
			s.send(b)
		}
		b.done()
	}
	if s.stream != nil && s.p.ctx.Err() == nil {
		s.close()
	}
}

// send sends the shard of block b, on a new stream to the next agent when
// there is none.
func (s *shardSender) send(b *putBlock) {
	req := &zrpcpb.WriteShardsRequest{
		Block: b.index, BlockLen: uint32(b.n), Sum: b.blk.Sums()[s.index], Payload: b.blk.Shards()[s.index],
	}
	for s.p.ctx.Err() == nil {
		if s.stream == nil && !s.open() {
			s.p.lose(s.index, []uint32{b.index}, errors.New("no agent is left to take it"))
			return
		}
		// The payload goes from the block by reference: the block stays
		// out of the pool until gRPC has written it, even past done.
		reclaim := wirecodec.Lend(req, "payload", b.blk.Lend())
		stop := guardWait(s.conn, s.p.c.cfg.shardStall, s.cancel)
		err := s.stream.Send(req)
		reclaim()
		if why := stop(); why != nil {
			// The stream was cancelled (not closed, which would make
			// the agent keep what it took): the agent took no data for
			// too long, or stopped answering.
			s.failed(s.stalled("took no shard data", why))
			continue
		}
		if err == nil {
			s.sent = append(s.sent, b.index)
			return
		}
		_, err = s.stream.CloseAndRecv() // its status says why
		s.failed(err)
	}
}

// open opens a stream to the next agent that takes one: the placement's
// target first, then spares. It reports false when none is left.
func (s *shardSender) open() bool {
	if s.none {
		return false
	}
	for s.p.ctx.Err() == nil {
		a := s.target
		if s.tried || a.GetNode() == "" || a.GetAddress() == "" {
			a = s.p.nextSpare()
		}
		s.tried = true
		if a == nil {
			s.none = true
			return false
		}
		conn, stream, cancel, err := s.openTo(a)
		if err == nil {
			s.agent, s.conn, s.stream, s.cancel, s.sent = a, conn, stream, cancel, nil
			return true
		}
		s.agent = a
		s.failed(err)
	}
	return false
}

// openTo opens a WriteShards stream to agent a and sends its header, in
// at most the stall bound, leaving an agent that stops answering; cancel
// ends the stream.
func (s *shardSender) openTo(a *zrpcpb.AgentAddress) (*grpc.ClientConn, zrpcpb.Blobs_WriteShardsClient, context.CancelFunc, error) {
	conn, err := s.p.c.agentConn(a.Address)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithCancel(s.p.ctx)
	stop := guardWait(conn, s.p.c.cfg.shardStall, cancel)
	stream, err := s.startStream(ctx, conn)
	if why := stop(); why != nil {
		err = s.stalled("did not take a stream", why)
	}
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return conn, stream, cancel, nil
}

// stalled is the error of a wait on the stream's agent that guardWait
// ended for why: the agent did not do what (within the stall bound).
func (s *shardSender) stalled(what string, why error) error {
	if errors.Is(why, errAgentSilent) {
		return fmt.Errorf("it %s and %w", what, errAgentSilent)
	}
	return fmt.Errorf("it %s within %s", what, s.p.c.cfg.shardStall)
}

// startStream opens a WriteShards stream on conn and sends its header.
func (s *shardSender) startStream(ctx context.Context, conn grpc.ClientConnInterface) (zrpcpb.Blobs_WriteShardsClient, error) {
	stream, err := zrpcpb.NewBlobsClient(conn).WriteShards(ctx)
	if err != nil {
		return nil, err
	}
	begin := s.p.begin
	hdr := &zrpcpb.WriteShardsHeader{
		Name: s.p.hdr.Name, BlobId: begin.BlobId, Index: s.index,
		DataShards: begin.DataShards, ParityShards: begin.ParityShards, BlockSize: begin.BlockSize,
		Revision: begin.GetHeader().GetRevision(),
	}
	if err := stream.Send(&zrpcpb.WriteShardsRequest{Header: hdr}); err != nil {
		_, err = stream.CloseAndRecv()
		return nil, err
	}
	return stream, nil
}

// failed handles the failure of the stream to s.agent (or of opening it):
// an answer about the put itself fails the put; an agent that failed
// loses the shards it was sent.
func (s *shardSender) failed(err error) {
	err = mapErr(err)
	lost := s.sent
	if s.cancel != nil {
		s.cancel()
	}
	s.conn, s.stream, s.cancel, s.sent = nil, nil, nil, nil
	switch {
	case s.p.ctx.Err() != nil:
		return
	case putRefused(err):
		s.p.fail(fmt.Errorf("put %q: agent %s refused shard %d: %w", s.p.hdr.Name, s.agent.GetNode(), s.index, err))
		return
	}
	why := fmt.Errorf("agent %s (%s) failed: %w", s.agent.GetNode(), s.agent.GetAddress(), err)
	s.p.c.log.Warn("agent failed during a put; its shards of the put are lost", "blob", s.p.hdr.Name, "shard", s.index,
		"agent", s.agent.GetNode(), "blocks", len(lost), "err", err)
	s.p.lose(s.index, lost, why)
}

// close ends the stream and records what its agent confirmed; blocks sent
// but not confirmed are lost.
func (s *shardSender) close() {
	// The agent answers once what it took is durable: a wait as long as
	// its disk takes, bounded only by the agent answering health checks.
	stop := guardWait(s.conn, 0, s.cancel)
	resp, err := s.stream.CloseAndRecv()
	if why := stop(); why != nil {
		s.failed(s.stalled("did not confirm the shards it took", why))
		return
	}
	if err != nil {
		s.failed(err)
		return
	}
	confirmed := make(map[uint32]bool, len(resp.GetBlocks()))
	for _, b := range resp.GetBlocks() {
		confirmed[b] = true
	}
	var lost []uint32
	for _, b := range s.sent {
		if !confirmed[b] {
			lost = append(lost, b)
		}
	}
	if len(resp.GetSums()) != len(resp.GetBlocks()) {
		lost = s.sent // an answer that does not pair blocks and sums confirms nothing
		resp = &zrpcpb.WriteShardsResponse{}
	}
	s.held = append(s.held, heldShards{agent: s.agent.GetNode(), blocks: resp.GetBlocks(), sums: resp.GetSums()})
	s.cancel()
	s.stream, s.cancel, s.sent = nil, nil, nil
	if len(lost) > 0 {
		s.p.lose(s.index, lost, fmt.Errorf("agent %s did not confirm it", s.agent.GetNode()))
	}
}

// putRefused reports whether an agent's error is an answer about the put
// (bad request, unknown or ended put, no permission), which another agent
// would give too, rather than a failure of that agent.
func putRefused(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.NotFound, codes.PermissionDenied, codes.Unauthenticated, codes.AlreadyExists, codes.FailedPrecondition:
		return true
	}
	return false
}
