package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// Reconnect backoff of a WatchStream.
const (
	watchBackoffMin = 50 * time.Millisecond
	watchBackoffMax = 2 * time.Second
)

// WatchStream delivers the registry events of one service (or of all) in
// revision order. A response the agent sent in parts (a snapshot of a large
// service) is delivered whole, once its last part has arrived. When the
// agent serving it fails, it reopens the watch on the next endpoint from
// the last revision it delivered, so the caller sees no gap; the agent may
// then answer with a snapshot (WatchResponse.Snapshot), which replaces what
// the caller had. With more than one endpoint the watch requires a leader
// (WatchRequest.require_leader): an agent cut off from the Raft leader (on
// the minority side of a partition) ends it, and it resumes on another
// agent rather than stay silent on a replica that no longer changes; when
// every endpoint is cut off, it takes a replica as it is. A caller that
// reads too slowly has its watch ended, by the agent
// (apierr.ErrWatchTooSlow) or by the client when its queue is full
// (watchmany.go); the stream resumes it the same way.
//
// The watches of a Client on one endpoint share one WatchMany stream; on an
// agent that predates WatchMany each has a Watch stream of its own.
//
// Recv must be called from one goroutine at a time; Close may be called from
// any goroutine.
type WatchStream struct {
	c       *Client
	ctx     context.Context // the caller's ctx
	wctx    context.Context // ctx, also cancelled by Close and Client.Close
	cancel  context.CancelCauseFunc
	service string

	// Owned by the Recv goroutine.
	rev uint64 // last revision delivered; the next open resumes after it
	// cluster is the id of the cluster whose history rev is of, as the
	// agents named it (WatchResponse.cluster_id); the next open sends it,
	// so that an agent of another cluster (rebuilt from an older state,
	// its revisions started over) answers with a snapshot. "" until an
	// agent named one.
	cluster  string
	idx      int // endpoint of the current feed
	feed     watchFeed
	failures int                   // consecutive failed opens, for backoff
	parts    *zrpcpb.WatchResponse // parts received of a response sent in several
	// partsBytes is the encoded size of parts; past maxWhole the agent is
	// taken as faulty (assemble).
	partsBytes int
	maxWhole   int
	// reopenNow skips the backoff before the next open: the feed ended
	// for a reason that is no failure (the agent predates WatchMany).
	reopenNow bool
	backoffs  int // backoffs waited before reopening (tests read it)
	// staleEnds counts the feeds ended since the last response because
	// their agent was cut off from the leader; staleOK: every endpoint
	// was, or failed to open, so the next opens take an agent's replica
	// as it is (require no leader) until a feed ends again.
	staleEnds int
	staleOK   bool
}

// watchFeed is where a WatchStream's responses come from on one endpoint:
// a watch on the endpoint's WatchMany stream (*muxWatch) or, on an agent
// that predates WatchMany, a Watch stream of its own (ownWatch). Both give
// the responses as the agent sent them, parts apart, so that the
// WatchStream assembles and advances them in one place.
type watchFeed interface {
	// recv returns the next response, or why the feed ended.
	recv() (*zrpcpb.WatchResponse, error)
	// close stops the feed; the WatchStream drops it and opens another.
	close()
}

// ownWatch is a Watch stream, for an agent that predates WatchMany.
type ownWatch struct {
	stream zrpcpb.Registry_WatchClient
	cancel context.CancelFunc
}

func (o ownWatch) recv() (*zrpcpb.WatchResponse, error) { return o.stream.Recv() }
func (o ownWatch) close()                               { o.cancel() }

// Watch opens a watch of service (empty: every service) for events after
// fromRevision; zero starts with a snapshot of the current state. It fails
// when no endpoint accepts the stream; once open, the stream reconnects by
// itself until ctx ends or Close is called.
func (c *Client) Watch(ctx context.Context, service string, fromRevision uint64) (*WatchStream, error) {
	if c.closing.Err() != nil {
		return nil, ErrClosed
	}
	wctx, cancel := context.WithCancelCause(ctx)
	w := &WatchStream{
		c:        c,
		ctx:      ctx,
		wctx:     wctx,
		cancel:   cancel,
		service:  service,
		rev:      fromRevision,
		idx:      int(c.cur.Load()),
		maxWhole: maxWatchResponseBytes,
	}
	c.cancelOnClose(wctx, cancel)
	if err := w.openAny(); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

// Recv returns the next response. It returns ctx's error when the Watch
// context ends, ErrClosed after Close, and the agent's error (mapped to the
// apierr sentinels) when the watch cannot go on, as on an invalid service
// name.
func (w *WatchStream) Recv() (*zrpcpb.WatchResponse, error) {
	for {
		if err := w.stopped(); err != nil {
			return nil, err
		}
		if w.feed == nil {
			if err := w.reopen(); err != nil {
				return nil, err
			}
		}
		resp, err := w.feed.recv()
		if err == nil {
			resp, err = w.assemble(resp)
		}
		if err == nil {
			if resp == nil {
				continue
			}
			w.advance(resp)
			w.failures, w.staleEnds = 0, 0
			return resp, nil
		}
		w.dropFeed()
		if serr := w.stopped(); serr != nil {
			return nil, serr
		}
		if err := w.resume(err); err != nil {
			return nil, err
		}
	}
}

// resume decides what follows the end of the feed with err: nil to open
// the watch again (on the endpoint it leaves in w.idx), or the error Recv
// returns because the watch cannot go on.
func (w *WatchStream) resume(err error) error {
	w.staleOK = false
	if errors.Is(mapErr(err), apierr.ErrStaleRead) {
		// Once every endpoint has refused, cut off, or failed to open
		// since the last response, the next opens take what they get.
		if w.staleEnds++; w.staleEnds+w.failures >= len(w.c.endpoints) {
			w.staleOK, w.staleEnds = true, 0
			w.c.log.Warn("no agent is in contact with the Raft leader; watching a replica as it is, which may be stale",
				"service", w.service, "from_revision", w.rev, "err", err)
		}
	}
	switch {
	case errors.Is(err, errNoWatchMany):
		// The agent predates WatchMany: the next open on it is a Watch
		// stream (the endpoint remembers), at once.
		w.reopenNow = true
		return nil
	case !resumable(err):
		return mapErr(err)
	case watchTooSlow(err):
		// The agent is fine; this reader fell behind. Everything up to
		// the revision it names was sent before the error, so w.rev
		// has reached it.
		w.c.log.Info("watch too slow, resuming",
			"endpoint", w.c.endpoints[w.idx].addr, "service", w.service, "from_revision", w.rev, "err", err)
		return nil
	}
	w.c.log.Info("watch stream broke, reconnecting",
		"endpoint", w.c.endpoints[w.idx].addr, "service", w.service, "from_revision", w.rev, "err", err)
	w.idx = (w.idx + 1) % len(w.c.endpoints)
	return nil
}

// Close ends the watch. It is safe to call more than once.
func (w *WatchStream) Close() error {
	w.cancel(ErrClosed)
	return nil
}

// Revision returns the last revision delivered (or the starting revision).
// Like Recv, it must not be called concurrently with Recv.
func (w *WatchStream) Revision() uint64 { return w.rev }

// maxWatchResponseBytes bounds a response the client gathers from parts
// (WatchResponse.More). The largest an agent sends is a snapshot of every
// service, the whole registry, which an agent's max_registry_bytes bounds
// (512 MiB by default); this is twice that, 16 of the largest messages
// the client takes (maxRecvMsgSize). Past it the agent is faulty, or
// hostile, and the client would hold whatever it sends.
const maxWatchResponseBytes = 16 * maxRecvMsgSize

// assemble collects the parts of a response the agent sent in several
// messages (WatchResponse.More): it returns nil until the last part has
// arrived, then the whole response (More unset). A feed that ends
// between parts drops them (dropFeed) and resumes before the response.
// Parts past w.maxWhole bytes end the feed with Unavailable, so that the
// watch resumes on another agent.
func (w *WatchStream) assemble(part *zrpcpb.WatchResponse) (*zrpcpb.WatchResponse, error) {
	if w.parts == nil && !part.GetMore() {
		return part, nil
	}
	if w.partsBytes += proto.Size(part); w.partsBytes > w.maxWhole {
		n := w.partsBytes
		w.parts, w.partsBytes = nil, 0
		return nil, status.Errorf(codes.Unavailable, "agent %s sent %d bytes of one watch response in parts (more set) without its last part, past the client's limit of %d MiB: a fault of the agent; the parts were dropped and the watch resumes on another agent",
			w.c.endpoints[w.idx].addr, n, w.maxWhole>>20)
	}
	if part.GetMore() {
		if w.parts == nil {
			w.parts = part
		} else {
			w.parts.Events = append(w.parts.Events, part.GetEvents()...)
		}
		return nil, nil
	}
	whole := w.parts
	w.parts, w.partsBytes = nil, 0
	whole.Header, whole.More = part.GetHeader(), false
	whole.Events = append(whole.Events, part.GetEvents()...)
	return whole, nil
}

// advance records the revision a response reflects, and the cluster it
// names: its header revision, or its last event's when the header is
// older. A snapshot sets it outright: the agent sends one below the
// revision the watch resumed from when that revision is of no history the
// cluster has (rebuilt from an older state), and resuming later from the
// old, higher one would skip the events between.
func (w *WatchStream) advance(resp *zrpcpb.WatchResponse) {
	if id := resp.GetClusterId(); id != "" {
		w.cluster = id
	}
	rev := resp.GetHeader().GetRevision()
	for _, ev := range resp.GetEvents() {
		rev = max(rev, ev.GetRevision())
	}
	if resp.GetSnapshot() {
		w.rev = rev
		return
	}
	w.rev = max(w.rev, rev)
}

// stopped returns why the watch must stop, or nil.
func (w *WatchStream) stopped() error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if w.wctx.Err() != nil || w.c.closing.Err() != nil {
		return ErrClosed
	}
	return nil
}

// openAny opens the feed on the current endpoint or, when it is
// unavailable, on each other endpoint once.
func (w *WatchStream) openAny() error {
	var err error
	for range w.c.endpoints {
		if err = w.open(); err == nil {
			return nil
		}
		if serr := w.stopped(); serr != nil {
			return serr
		}
		if !resumable(err) {
			return mapErr(err)
		}
		w.idx = (w.idx + 1) % len(w.c.endpoints)
	}
	return mapErr(err)
}

// reopen opens the feed again after a failure, waiting a capped, jittered
// exponential backoff before each attempt and moving to the next endpoint
// after each failed one. It gives up only when the watch stops or an agent
// refuses the watch itself.
func (w *WatchStream) reopen() error {
	for {
		if w.reopenNow {
			w.reopenNow = false
		} else {
			w.backoffs++
			if err := w.sleep(backoffDelay(w.failures)); err != nil {
				return err
			}
		}
		err := w.open()
		if err == nil {
			w.c.log.Info("watch stream resumed",
				"endpoint", w.c.endpoints[w.idx].addr, "service", w.service, "from_revision", w.rev)
			return nil
		}
		if serr := w.stopped(); serr != nil {
			return serr
		}
		if !resumable(err) {
			return mapErr(err)
		}
		w.failures++
		w.idx = (w.idx + 1) % len(w.c.endpoints)
	}
}

// open starts a feed on endpoint w.idx from w.rev: a watch on the
// endpoint's WatchMany stream or, when its agent does not serve WatchMany,
// a Watch stream.
func (w *WatchStream) open() error {
	ep := &w.c.endpoints[w.idx]
	req := &zrpcpb.WatchRequest{Service: w.service, FromRevision: w.rev, ClusterId: w.cluster,
		RequireLeader: len(w.c.endpoints) > 1 && !w.staleOK}
	mw, err := ep.watches.watch(w.wctx, req)
	switch {
	case err == nil:
		w.feed = mw
	case errors.Is(err, errNoWatchMany):
		ctx, cancel := context.WithCancel(w.wctx)
		stream, err := ep.registry.Watch(ctx, req)
		if err != nil {
			cancel()
			return err
		}
		w.feed = ownWatch{stream: stream, cancel: cancel}
	default:
		return err
	}
	w.c.cur.Store(int64(w.idx))
	return nil
}

func (w *WatchStream) dropFeed() {
	if w.feed != nil {
		w.feed.close()
	}
	w.feed, w.parts, w.partsBytes = nil, nil, 0
}

// sleep waits d or until the watch stops.
func (w *WatchStream) sleep(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-w.wctx.Done():
		return w.stopped()
	}
}

// backoffDelay returns the wait before reconnect attempt n (0-based): it
// doubles from watchBackoffMin up to watchBackoffMax, and is jittered down by
// up to half so that watchers of a failed agent do not reconnect in step.
func backoffDelay(n int) time.Duration {
	d := watchBackoffMin << min(n, 16)
	d = min(d, watchBackoffMax)
	return d/2 + rand.N(d/2+1)
}
