package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// putChunk is how many bytes one Put message carries.
const putChunk = 512 << 10

// PutOptions tune PutBlob. The zero value stores with the cluster's default
// erasure coding and refuses to replace an existing blob.
type PutOptions struct {
	// Data and Parity shards per block; both 0 pick the cluster's default.
	Data, Parity int
	// Overwrite replaces an existing blob of the same name.
	Overwrite bool
	// BestEffort accepts Data+Parity larger than the alive agents; missing
	// shards are stored by repair later.
	BestEffort bool
	// Size, when known (> 0), lets the agent refuse a blob that is too large
	// before any byte is sent, and check that exactly Size bytes arrive.
	Size int64
	// Progress, when set, is called with the total bytes sent so far (from
	// 0 again when the put starts over, see PutBlob).
	Progress func(sent int64)
	// ThroughAgent sends the blob through one agent, which encodes it and
	// spreads the shards (the API's Put), instead of striping it from
	// this client.
	ThroughAgent bool
}

// PutBlob stores the bytes of r under name. The client stripes the blob
// itself: it asks the cluster where the shards go (and for a lease on the
// put), reads and encodes r block by block, streams each shard index
// straight to its agent, and commits the metadata the agents confirmed
// (stripeput.go). A small blob, and every blob when the agent is of a
// version without client-striped puts, goes through one agent instead,
// which encodes and spreads the shards; that put is retried on another
// agent only if the first could not be reached before any byte was read
// from r.
//
// An agent that fails during the put loses the shards it was sent; when a
// block is left with too few (with 3 or 4 agents, the default 2+1 scheme
// needs every shard) the put is aborted, having committed nothing. If r
// is an io.Seeker (a file), PutBlob then starts the put over from r's
// first position, at most twice, a second and then two apart, the
// cluster placing the shards anew (a spare agent, or gossip has found
// the failed one gone by then). So does a put through an agent that
// stored too few shards for the same reason.
func (c *Client) PutBlob(ctx context.Context, name string, r io.Reader, opts PutOptions) (*zrpcpb.BlobPutResponse, error) {
	seeker, start := startOf(r)
	for attempt := 1; ; attempt++ {
		resp, err := c.putBlobOnce(ctx, name, r, opts)
		if err == nil || seeker == nil || attempt > len(putRetryWaits) || !errors.Is(err, errPutLostShards) {
			return resp, err
		}
		wait := putRetryWaits[attempt-1]
		c.log.Warn("a put lost shards with an agent that failed; starting it over", "blob", name, "attempt", attempt+1, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		if _, serr := seeker.Seek(start, io.SeekStart); serr != nil {
			return nil, fmt.Errorf("%w (and rewinding the source to put it again: %v)", err, serr)
		}
	}
}

// putRetryWaits are the waits before a put that lost shards starts over.
var putRetryWaits = []time.Duration{time.Second, 2 * time.Second}

// errPutLostShards marks a put aborted because an agent failed with
// shards it needed: nothing was committed, and the put may start over.
var errPutLostShards = errors.New("shards lost with an agent")

// startOf returns r as an io.Seeker and its position, or nil when r
// cannot seek (a pipe).
func startOf(r io.Reader) (io.Seeker, int64) {
	s, ok := r.(io.Seeker)
	if !ok {
		return nil, 0
	}
	pos, err := s.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, 0
	}
	return s, pos
}

func (c *Client) putBlobOnce(ctx context.Context, name string, r io.Reader, opts PutOptions) (*zrpcpb.BlobPutResponse, error) {
	if c.closing.Err() != nil {
		return nil, ErrClosed
	}
	if opts.Data < 0 || opts.Parity < 0 || opts.Data+opts.Parity > 256 {
		return nil, fmt.Errorf("%w: data %d and parity %d shards: each 0 or more, at most 256 in all",
			apierr.ErrInvalidArgument, opts.Data, opts.Parity)
	}
	hdr := &zrpcpb.BlobPutHeader{
		Name: name, Size: opts.Size, DataShards: uint32(opts.Data), ParityShards: uint32(opts.Parity),
		Overwrite: opts.Overwrite, BestEffort: opts.BestEffort,
	}
	if opts.ThroughAgent {
		return c.putThroughAgent(ctx, hdr, r, opts.Progress)
	}
	begin, err := c.beginPut(ctx, hdr)
	switch {
	case status.Code(err) == codes.Unimplemented || (err == nil && begin.GetInline()):
		// An agent without client-striped puts, or a blob stored inline.
		return c.putThroughAgent(ctx, hdr, r, opts.Progress)
	case err != nil:
		return nil, err
	}
	p, err := c.newStripePut(hdr, begin, opts.Progress)
	if err != nil {
		if begin.GetBlobId() != "" {
			// Begun, but not to be sent: end it now rather than leave
			// it pending until its lease runs out.
			(&stripePut{c: c, hdr: hdr, begin: begin}).abort(ctx)
		}
		return nil, err
	}
	return p.run(ctx, r)
}

// putThroughAgent sends the put to one agent, which encodes the blob and
// spreads its shards.
//
// An agent that fails before the whole blob was sent (it went away) cannot
// have stored it, as an agent commits a put only at the end of its
// stream; nor has one that says nothing was applied (cut off from the
// leader, it could not announce the put), however much was sent. Then the
// put moves to the next agent, from the start again, when the source can
// seek back; a pipe cannot, and the put fails saying to retry it. An agent
// lost once the whole blob was sent may have stored it: the put fails with
// ErrOutcomeUnknown.
func (c *Client) putThroughAgent(ctx context.Context, hdr *zrpcpb.BlobPutHeader, r io.Reader, progress func(int64)) (*zrpcpb.BlobPutResponse, error) {
	name := hdr.Name
	seeker, start := startOf(r)
	var resp *zrpcpb.BlobPutResponse
	var read, sent, notApplied bool
	// unanswered is the failure of an attempt that sent the whole blob
	// and got no answer (the agent died, the connection broke): the
	// agents may have stored the blob.
	var unanswered error
	err := c.callLong(ctx, func(ctx context.Context, ep *endpoint) error {
		if read {
			if seeker == nil || (sent && !notApplied) {
				return errPutStarted
			}
			if _, err := seeker.Seek(start, io.SeekStart); err != nil {
				return errPutStarted
			}
			read, sent = false, false
		}
		var err error
		resp, err = putBlob(ctx, ep, hdr, r, progress, &read, &sent)
		notApplied = apierr.IsNotApplied(apierr.FromStatus(err))
		if sent && retryable(err) && apierr.Code(apierr.FromStatus(err)) == "" {
			unanswered = err
		}
		return err
	})
	switch {
	case err != nil && unanswered != nil && ctx.Err() == nil:
		err = fmt.Errorf("put %q: %w: the agent gave no answer (%w) after the whole blob was sent, while the agents may have been storing it; "+
			"`zrpcctl blob stat %s` shows whether it was stored", name, apierr.ErrOutcomeUnknown, unanswered, name)
	case errors.Is(err, errPutStarted):
		err = fmt.Errorf("put %q: the agent failed after the upload began: retry the put", name)
	case errors.Is(err, apierr.ErrNotEnoughShards):
		// The agent stored too few shards of a block (an agent it
		// placed some on failed, its gossip not knowing yet) and
		// committed nothing: PutBlob may start the put over.
		err = fmt.Errorf("%w: %w", errPutLostShards, err)
	case err != nil && sent && ctx.Err() != nil:
		// Every byte went out: the agents may be committing the blob
		// now, and no answer will say whether they did.
		err = fmt.Errorf("put %q: %w: the call ended (%w) after the whole blob was sent, while the agents were storing it; "+
			"`zrpcctl blob stat %s` shows whether it was stored", name, apierr.ErrOutcomeUnknown, context.Cause(ctx), name)
	}
	return resp, err
}

var errPutStarted = errors.New("put already started")

// putBlob streams one put to ep; *read is set once r has been read from,
// *all once all of it has been sent.
func putBlob(ctx context.Context, ep *endpoint, hdr *zrpcpb.BlobPutHeader, r io.Reader, progress func(int64), read, all *bool) (*zrpcpb.BlobPutResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := zrpcpb.NewBlobsClient(ep.conn).Put(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&zrpcpb.BlobPutRequest{Msg: &zrpcpb.BlobPutRequest_Header{Header: hdr}}); err != nil {
		_, err = stream.CloseAndRecv()
		return nil, err
	}
	buf := make([]byte, putChunk)
	var sent int64
	for {
		n, rerr := io.ReadFull(r, buf)
		*read = true
		if n > 0 {
			if err := stream.Send(&zrpcpb.BlobPutRequest{Msg: &zrpcpb.BlobPutRequest_Chunk{Chunk: buf[:n]}}); err != nil {
				// The agent ended the stream; its status says why.
				_, err = stream.CloseAndRecv()
				return nil, err
			}
			sent += int64(n)
			if progress != nil {
				progress(sent)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("read blob %q: %w", hdr.Name, rerr)
		}
	}
	*all = true
	return stream.CloseAndRecv()
}

// GetOptions select what GetBlob reads.
type GetOptions struct {
	// Offset and Length select a range; Length 0 reads to the end, as
	// does a Length past the end. An Offset past the end, or a Length
	// above math.MaxInt64, is ErrInvalidArgument.
	Offset, Length uint64
	// MinRevision makes the agent wait until it has applied this revision
	// (e.g. the revision PutBlob returned), to read one's own write.
	MinRevision uint64
	// ThroughAgent reads through one agent, which gathers and decodes the
	// shards (the API's Get), instead of from the shards' holders.
	ThroughAgent bool
	// Consistency of the metadata read (see zrpcpb.BlobGetRequest): by
	// default a blob the agent's replica lacks is "not found" only when
	// the replica can vouch for that; STALE takes the replica as it is.
	Consistency zrpcpb.Consistency
}

// BlobReader streams a blob's bytes. A whole-blob read checks the blob's
// SHA-256 at the end: a mismatch is returned by Read instead of io.EOF.
type BlobReader struct {
	blob *zrpcpb.Blob
	// next returns the next bytes, valid until its next call, or io.EOF
	// after the last.
	next func() ([]byte, error)
	// buffered, when set, reports whether next has bytes ready, so that
	// Read can fill its buffer from several chunks without waiting.
	buffered func() bool
	// digest is the SHA-256 of every byte next returned, called once it
	// returned io.EOF; nil for ranged reads.
	digest func() []byte
	stop   func()
	buf    []byte
	read   uint64
	want   uint64
	err    error
}

// Blob is the blob's metadata (name, size, scheme, digest).
func (b *BlobReader) Blob() *zrpcpb.Blob { return b.blob }

// Size is how many bytes this reader yields.
func (b *BlobReader) Size() uint64 { return b.want }

// Read fills p with the chunks at hand, and waits for the next one only
// while it has read nothing.
func (b *BlobReader) Read(p []byte) (int, error) {
	n := 0
	for {
		c := copy(p[n:], b.buf)
		b.buf = b.buf[c:]
		n += c
		if n == len(p) || n > 0 && (b.err != nil || b.buffered == nil || !b.buffered()) {
			return n, nil
		}
		if b.err != nil {
			return 0, b.err
		}
		chunk, err := b.next()
		switch {
		case err == io.EOF:
			b.err = b.finish()
		case err != nil:
			b.err = fmt.Errorf("read blob %q: %w", b.blob.Name, mapErr(err))
		case uint64(len(chunk)) > b.want-b.read:
			// An agent whose stream goes on past the blob's end: its
			// bytes are not the blob's, and a caller reading to the end
			// (io.ReadAll) would hold whatever it sends.
			b.err = fmt.Errorf("read blob %q: the agent sent more than the %d bytes read: its answer is not this blob; retry the read",
				b.blob.Name, b.want)
		default:
			b.buf = chunk
			b.read += uint64(len(chunk))
		}
	}
}

func (b *BlobReader) finish() error {
	if b.read != b.want {
		return fmt.Errorf("read blob %q: got %d bytes, want %d: %w", b.blob.Name, b.read, b.want, io.ErrUnexpectedEOF)
	}
	if b.digest == nil {
		return io.EOF
	}
	if sum := b.digest(); !bytes.Equal(sum, b.blob.Sha256) {
		return fmt.Errorf("%w: blob %q: SHA-256 of the bytes read is %x, stored digest is %x",
			apierr.ErrCorrupt, b.blob.Name, sum, b.blob.Sha256)
	}
	return io.EOF
}

// Close ends the read.
func (b *BlobReader) Close() error {
	b.stop()
	return nil
}

// GetBlob opens the blob called name for reading. The caller must Close
// the reader.
//
// The client asks an agent where the blob's shards are (Locate) and reads
// the data shards of each block in parallel straight from the agents
// holding them, decoding from parity shards only for a block whose data
// shards are missing, corrupt or on an agent that fails during the read
// (stripeget.go). A blob small enough to be stored inline comes with the
// answer. With opts.ThroughAgent, or when the agent is too old to answer
// Locate, one agent gathers the shards and streams the bytes.
func (c *Client) GetBlob(ctx context.Context, name string, opts GetOptions) (*BlobReader, error) {
	if c.closing.Err() != nil {
		return nil, ErrClosed
	}
	if opts.ThroughAgent {
		return c.getThroughAgent(ctx, name, opts)
	}
	var loc *zrpcpb.LocateResponse
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		loc, err = zrpcpb.NewBlobsClient(ep.conn).Locate(ctx, &zrpcpb.LocateRequest{Name: name, MinRevision: opts.MinRevision, Consistency: opts.Consistency})
		return err
	})
	if status.Code(err) == codes.Unimplemented {
		return c.getThroughAgent(ctx, name, opts)
	}
	if err != nil {
		return nil, err
	}
	return c.getLocated(ctx, loc, opts)
}

// getThroughAgent reads through one agent's Get.
func (c *Client) getThroughAgent(ctx context.Context, name string, opts GetOptions) (*BlobReader, error) {
	var out *BlobReader
	bound := c.firstAnswerBound(ctx)
	err := c.callOpen(ctx, func(ctx context.Context, ep *endpoint) error {
		sctx, cancel := context.WithCancelCause(ctx)
		// The stream outlives the call; its first message (the blob's
		// metadata) is bounded as a call is, so that an agent that takes
		// the stream and never answers does not hold the caller for good.
		late := time.AfterFunc(bound, func() { cancel(errNoFirstAnswer) })
		stream, err := zrpcpb.NewBlobsClient(ep.conn).Get(sctx, &zrpcpb.BlobGetRequest{
			Name: name, Offset: opts.Offset, Length: opts.Length, MinRevision: opts.MinRevision, Consistency: opts.Consistency,
		})
		var first *zrpcpb.BlobGetResponse
		if err == nil {
			if first, err = stream.Recv(); err == nil && first.Blob == nil {
				err = fmt.Errorf("get blob %q: the agent sent no metadata first", name)
			}
		}
		if !late.Stop() && errors.Is(context.Cause(sctx), errNoFirstAnswer) && ctx.Err() == nil {
			err = status.Errorf(codes.Unavailable, "get blob %q: the agent sent nothing within %s of the read's start "+
				"(client.Config.CallTimeout, or AttemptTimeout with several agents): is it stuck or overloaded? its logs and metrics say more", name, bound)
		}
		if err == nil {
			out = newStreamReader(first.Blob, opts, stream.Recv, func() { cancel(nil) })
			return nil
		}
		cancel(nil)
		return err
	})
	return out, err
}

// errNoFirstAnswer ends a stream whose agent sent nothing within
// firstAnswerBound.
var errNoFirstAnswer = errors.New("no first answer")

// firstAnswerBound bounds the wait for a stream's first message, for a
// stream that outlives the call opening it (callOpen): CallTimeout when
// ctx has no deadline, and AttemptTimeout, when shorter, with several
// endpoints to move on to.
func (c *Client) firstAnswerBound(ctx context.Context) time.Duration {
	bound := time.Duration(math.MaxInt64)
	if _, ok := ctx.Deadline(); !ok {
		bound = c.cfg.CallTimeout
	}
	if len(c.endpoints) > 1 {
		bound = min(bound, c.cfg.AttemptTimeout)
	}
	return bound
}

// newStreamReader reads the chunks of a Get stream.
func newStreamReader(b *zrpcpb.Blob, opts GetOptions, recv func() (*zrpcpb.BlobGetResponse, error), cancel context.CancelFunc) *BlobReader {
	start, end := clampRange(b.Size, opts)
	r := &BlobReader{blob: b, want: end - start, stop: cancel}
	r.next = func() ([]byte, error) {
		msg, err := recv()
		if err != nil {
			return nil, err
		}
		return msg.Chunk, nil
	}
	if start == 0 && end == b.Size {
		h := newChunkHasher()
		r.next = func() ([]byte, error) {
			msg, err := recv()
			if err != nil {
				return nil, err
			}
			h.add(msg.Chunk)
			return msg.Chunk, nil
		}
		r.digest = h.sum
		r.stop = func() { cancel(); h.close() }
	}
	return r
}

// clampRange is the range opts selects of a blob of size bytes, cut at
// its end.
func clampRange(size uint64, opts GetOptions) (start, end uint64) {
	start = min(opts.Offset, size)
	end = size
	if opts.Length > 0 && opts.Length < end-start {
		end = start + opts.Length
	}
	return start, end
}

// chunkHasher computes a SHA-256 in its own goroutine, so that hashing a
// chunk overlaps receiving the next. Chunks must not change once added.
type chunkHasher struct {
	sha   hash.Hash
	ch    chan []byte
	done  chan struct{}
	close func()
}

func newChunkHasher() *chunkHasher {
	h := &chunkHasher{sha: sha256.New(), ch: make(chan []byte, 8), done: make(chan struct{})}
	h.close = sync.OnceFunc(func() { close(h.ch) })
	go func() {
		defer close(h.done)
		for chunk := range h.ch {
			h.sha.Write(chunk)
		}
	}()
	return h
}

func (h *chunkHasher) add(chunk []byte) { h.ch <- chunk }

// sum waits for every chunk added to be hashed and returns the digest.
func (h *chunkHasher) sum() []byte {
	h.close()
	<-h.done
	return h.sha.Sum(nil)
}

// StatBlob returns a blob's metadata, shard locations and health.
// WithConsistency sets the read's consistency (see zrpcpb.BlobStatRequest).
func (c *Client) StatBlob(ctx context.Context, name string, opts ...ReadOption) (*zrpcpb.BlobStatResponse, error) {
	o := collectReadOptions(opts)
	var resp *zrpcpb.BlobStatResponse
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = zrpcpb.NewBlobsClient(ep.conn).Stat(ctx, &zrpcpb.BlobStatRequest{Name: name, Consistency: o.consistency})
		return err
	})
	return resp, err
}

// ListBlobs lists the blobs whose names start with prefix, sorted by
// name. WithConsistency sets the read's consistency (see
// zrpcpb.BlobListRequest).
func (c *Client) ListBlobs(ctx context.Context, prefix string, opts ...ReadOption) ([]*zrpcpb.BlobSummary, error) {
	o := collectReadOptions(opts)
	var resp *zrpcpb.BlobListResponse
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = zrpcpb.NewBlobsClient(ep.conn).List(ctx, &zrpcpb.BlobListRequest{Prefix: prefix, Consistency: o.consistency})
		return err
	})
	return resp.GetBlobs(), err
}

// DeleteBlob removes a blob; its shards are deleted in the background. The
// answer carries the revision of the delete.
func (c *Client) DeleteBlob(ctx context.Context, name string) (*zrpcpb.BlobDeleteResponse, error) {
	req := &zrpcpb.BlobDeleteRequest{Name: name, RequestId: newRequestID()}
	var resp *zrpcpb.BlobDeleteResponse
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = zrpcpb.NewBlobsClient(ep.conn).Delete(ctx, req)
		return err
	})
	return resp, err
}

// RepairStatus reports the leader's shard repair: queued, in progress,
// rebuilt.
func (c *Client) RepairStatus(ctx context.Context) (*zrpcpb.RepairStatusResponse, error) {
	var resp *zrpcpb.RepairStatusResponse
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = zrpcpb.NewBlobsClient(ep.conn).RepairStatus(ctx, &zrpcpb.RepairStatusRequest{})
		return err
	})
	return resp, err
}
