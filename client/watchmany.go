package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/monotime"
)

// A Client's watches of one endpoint share one WatchMany stream, which
// costs the agent far less than a Watch stream each (watchMux). The stream
// is opened when the first watch needs it and ends when its last watch
// leaves, when the agent or the connection ends it, or when the Client
// closes; the next watch opens another. Each stream has one goroutine,
// which receives its responses and hands each to its watch's queue.
//
// Bounds: the receive goroutine never waits for a caller. A watch's queue
// holds at most watchQueueLen responses and watchQueueBytes; a response
// that would pass either ends the watch instead (errQueueFull): it is
// cancelled on the stream, what it had queued is dropped, and its next
// Recv opens it again from the last revision it delivered, as when the
// agent ends a watch as too slow. So a caller that stops reading holds up
// no other watch, and costs at most one queue until it reads again.

// Bounds of the responses of one watch received and not yet taken by Recv.
const (
	watchQueueLen   = 64
	watchQueueBytes = 4 << 20
)

// errQueueFull ends a watch whose caller left its queue full. It wraps
// ErrWatchTooSlow, so the WatchStream resumes it as it resumes a watch the
// agent ended for reading too slowly.
var errQueueFull = fmt.Errorf("%w: the caller left %d responses (or %d MiB) of the watch unread; they were dropped",
	apierr.ErrWatchTooSlow, watchQueueLen, watchQueueBytes>>20)

// errNoWatchMany ends the watches of a WatchMany stream that the agent
// answered with Unimplemented: it predates WatchMany, so each watch goes on
// with a Watch stream of its own on that endpoint.
var errNoWatchMany = errors.New("agent does not serve WatchMany")

// watchMux shares one WatchMany stream of an endpoint among the Client's
// watches of that endpoint.
type watchMux struct {
	c        *Client
	addr     string
	registry zrpcpb.RegistryClient
	// noWatchMany: the agent answered WatchMany with Unimplemented. It
	// stays set for the Client's life; watches use Watch streams instead.
	noWatchMany atomic.Bool
	// receivers counts the streams' receive goroutines (and their
	// watchers of silence); close waits for them.
	receivers sync.WaitGroup
	// probe reports whether the agent leaves a health check unanswered
	// (endpoint.silent); nil when the client has no other endpoint to
	// move to (watchsilent.go).
	probe func(context.Context) bool
	// agreed is the interval of progress notifications (a time.Duration)
	// the agent agreed to on a stream that was then left for sending
	// nothing, or that still runs; 0 when none did, or the last stream
	// ended otherwise (the agent may have been replaced by an older
	// build). A new stream expects progress at once when it is set: an
	// agent whose watches are stuck answers no request for it.
	agreed atomic.Int64

	mu  sync.Mutex
	cur *muxStream // the stream new watches join; nil when none is open
	// dialing is closed when the stream being opened is open (or failed);
	// nil when none is being opened.
	dialing chan struct{}
	lastID  uint64 // ids are never reused, so late responses of a cancelled watch are told apart
	closed  bool   // the Client closed: no more streams
}

// muxStream is one WatchMany stream.
type muxStream struct {
	m      *watchMux
	stream zrpcpb.Registry_WatchManyClient
	ctx    context.Context // the stream's; its cause says why it was cancelled
	cancel context.CancelCauseFunc
	// heard is when the stream last received a response (a monotonic
	// instant, internal/monotime).
	heard atomic.Int64
	// askProgress is the interval of progress notifications each create
	// asks for, in milliseconds; 0 (none) when the client has no other
	// endpoint to move to. progressEvery is the interval the agent agreed
	// to (a time.Duration), 0 until it sent its first progress
	// notification (watchsilent.go).
	askProgress   uint32
	progressEvery atomic.Int64
	// watches are the watches open on the stream, by id; nil once the
	// stream has ended. Guarded by m.mu.
	watches map[uint64]*muxWatch
	// sendMu serializes sends (gRPC allows one at a time) and guards each
	// watch's created and left.
	sendMu sync.Mutex
}

// muxWatch is one watch on a WatchMany stream. A WatchStream reads it
// (recv) until it ends, then drops it (close) and opens another.
type muxWatch struct {
	s   *muxStream
	id  uint64
	ctx context.Context // the WatchStream's; when it ends, the watch leaves
	// stopLeave undoes the leave registered on ctx.
	stopLeave func() bool

	queue chan queuedResponse
	bytes atomic.Int64 // the sizes of the responses in queue

	// ended is closed once nothing more will be queued; err says why.
	ended chan struct{}
	err   error

	// created: the create was sent; left: the watch left the stream, so
	// no create may be sent any more. Guarded by s.sendMu.
	created, left bool

	// dropped is set when the receive goroutine begins to empty the queue
	// of a watch whose queue overflowed (drop). A response recv takes
	// from the queue after that may follow one drop took, so it is not
	// delivered: the watch resumes from the last revision delivered.
	// Guarded by dropMu.
	dropMu  sync.Mutex
	dropped bool
}

type queuedResponse struct {
	resp *zrpcpb.WatchResponse
	size int64
}

func newWatchMux(c *Client, addr string, registry zrpcpb.RegistryClient) *watchMux {
	return &watchMux{c: c, addr: addr, registry: registry}
}

// watch opens a watch of req on the endpoint's stream, opening the stream
// first when none is open. ctx is the WatchStream's: when it ends, the
// watch leaves the stream. It returns errNoWatchMany when the agent is
// known not to serve WatchMany, and the error of opening the stream when
// that fails. What the agent answers to the watch, refusals included,
// comes from recv.
func (m *watchMux) watch(ctx context.Context, req *zrpcpb.WatchRequest) (*muxWatch, error) {
	for {
		m.mu.Lock()
		if err := m.refusal(); err != nil {
			m.mu.Unlock()
			return nil, err
		}
		if m.cur != nil {
			w := m.join(ctx)
			m.mu.Unlock()
			w.s.create(w, req)
			return w, nil
		}
		dialing := m.dialing
		if dialing == nil {
			m.dialing = make(chan struct{})
		}
		m.mu.Unlock()
		if dialing == nil {
			if err := m.open(ctx); err != nil {
				return nil, err
			}
			continue
		}
		// Another watch is opening the stream: join that one.
		select {
		case <-dialing:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// refusal returns why no watch may join a stream of the endpoint, nil
// when one may. The caller holds m.mu.
func (m *watchMux) refusal() error {
	switch {
	case m.closed:
		return ErrClosed
	case m.noWatchMany.Load():
		return errNoWatchMany
	}
	return nil
}

// join adds a watch to the open stream. The caller holds m.mu.
func (m *watchMux) join(ctx context.Context) *muxWatch {
	s := m.cur
	m.lastID++
	w := &muxWatch{s: s, id: m.lastID, ctx: ctx,
		queue: make(chan queuedResponse, watchQueueLen), ended: make(chan struct{})}
	s.watches[w.id] = w
	w.stopLeave = context.AfterFunc(ctx, func() { m.leave(w) })
	return w
}

// open dials a stream and makes it the open one, with its receive
// goroutine, unless the Client closed meanwhile. The caller set
// m.dialing; open clears it. The stream lives until it is cancelled or the
// Client closes, but ctx, the WatchStream's, bounds the wait to open it:
// the other watches waiting for it dial again.
func (m *watchMux) open(ctx context.Context) error {
	sctx, cancel := context.WithCancelCause(m.c.closing)
	stop := context.AfterFunc(ctx, func() { cancel(nil) })
	stream, err := m.registry.WatchMany(sctx)
	if !stop() {
		err = context.Cause(ctx)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	close(m.dialing)
	m.dialing = nil
	if err == nil && m.closed {
		err = ErrClosed
	}
	if err != nil {
		cancel(nil)
		return err
	}
	s := &muxStream{m: m, stream: stream, ctx: sctx, cancel: cancel, watches: make(map[uint64]*muxWatch)}
	s.heard.Store(monotime.Now())
	if m.probe != nil {
		s.askProgress = uint32(watchProgress / time.Millisecond)
		s.progressEvery.Store(m.agreed.Load())
	}
	m.cur = s
	m.receivers.Add(1)
	go s.receive()
	if m.probe != nil {
		m.receivers.Add(1)
		go s.mindSilence()
	}
	return nil
}

// leave takes w off its stream: it sends a cancel or, when w was the last
// watch on the stream, ends the stream. It is safe to call more than once.
func (m *watchMux) leave(w *muxWatch) {
	s := w.s
	m.mu.Lock()
	_, open := s.watches[w.id]
	delete(s.watches, w.id)
	last := m.cur == s && len(s.watches) == 0
	if last {
		m.cur = nil
	}
	m.mu.Unlock()
	switch {
	case last:
		s.cancel(nil) // the agent ends what the stream still carries
	case open:
		s.cancelWatch(w)
	}
}

// close ends the open stream, refuses new ones and waits for the
// streams' receive goroutines. The Client calls it as it closes.
func (m *watchMux) close() {
	m.mu.Lock()
	m.closed = true
	s := m.cur
	m.cur = nil
	m.mu.Unlock()
	if s != nil {
		s.cancel(nil)
	}
	m.receivers.Wait()
}

// create sends the create of w, unless w has left the stream already.
func (s *muxStream) create(w *muxWatch, req *zrpcpb.WatchRequest) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if w.left {
		return
	}
	w.created = true
	s.send(&zrpcpb.WatchManyRequest{ProgressNotifyMs: s.askProgress, Kind: &zrpcpb.WatchManyRequest_Create{
		Create: &zrpcpb.WatchCreate{WatchId: w.id, Watch: req}}})
}

// cancelWatch sends the cancel of w, once its create was sent; after it,
// no create of w is sent.
func (s *muxStream) cancelWatch(w *muxWatch) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if w.left {
		return
	}
	w.left = true
	if w.created {
		s.send(&zrpcpb.WatchManyRequest{Kind: &zrpcpb.WatchManyRequest_Cancel{
			Cancel: &zrpcpb.WatchCancel{WatchId: w.id}}})
	}
}

// send sends req; the caller holds sendMu. A failed send is not reported
// here: it means the stream has ended (gRPC ends it on an error of its
// own making too), and the receive goroutine learns why from Recv and ends
// every watch on the stream with it. A send waits only for the agent to
// read earlier requests, which it does as they come.
func (s *muxStream) send(req *zrpcpb.WatchManyRequest) {
	if err := s.stream.Send(req); err != nil {
		s.m.c.log.Debug("send on WatchMany stream failed", "endpoint", s.m.addr, "err", err)
	}
}

// receive hands each response of the stream to its watch until the stream
// ends, then ends the watches still on it. It is the stream's goroutine.
func (s *muxStream) receive() {
	defer s.m.receivers.Done()
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			if !errors.Is(context.Cause(s.ctx), errNoWatchProgress) {
				s.m.agreed.Store(0)
			}
			s.end(s.silentEnd(err))
			return
		}
		s.heard.Store(monotime.Now())
		if ms := resp.GetProgressNotifyMs(); ms != 0 {
			// Progress of the stream, no watch's response.
			every := int64(time.Duration(ms) * time.Millisecond)
			s.progressEvery.Store(every)
			s.m.agreed.Store(every)
			continue
		}
		s.dispatch(resp)
	}
}

// dispatch queues resp for its watch, or ends the watch when resp is its
// end or its queue is full. A response of a watch no longer on the stream
// (cancelled, its cancel not yet read by the agent) is dropped.
func (s *muxStream) dispatch(resp *zrpcpb.WatchManyResponse) {
	q := queuedResponse{resp: resp.GetResponse(), size: int64(proto.Size(resp.GetResponse()))}
	m := s.m
	m.mu.Lock()
	w := s.watches[resp.GetWatchId()]
	var err error
	switch {
	case w == nil:
	case resp.GetEnded() != nil:
		err = watchEndError(resp.GetEnded(), m.addr)
	case q.resp != nil && !w.offer(q):
		err = errQueueFull
	}
	if err == nil {
		m.mu.Unlock()
		return
	}
	delete(s.watches, w.id)
	m.mu.Unlock()
	if errors.Is(err, errQueueFull) {
		w.drop()
		s.cancelWatch(w)
	}
	w.end(err)
}

// watchEndError returns why the agent at addr ended a watch with d. An
// end whose status is OK (a fault of the agent, which sends nothing more
// for the watch) still ends it, Unknown and saying so, rather than leave
// the watch waiting for responses that never come.
func watchEndError(d *zrpcpb.ErrorDetail, addr string) error {
	if err := fromDetail(d); err != nil {
		return err
	}
	return status.Errorf(codes.Unknown, "agent %s ended the watch with no error code (reason %q, message %q): a fault of the agent; open the watch again, and report the agent's release if it repeats",
		addr, d.GetReason(), d.GetMessage())
}

// end ends the watches of a stream that ended with err and frees the
// stream. Unimplemented means the agent does not serve WatchMany: the
// endpoint's watches use Watch streams from now on.
func (s *muxStream) end(err error) {
	m := s.m
	if status.Code(err) == codes.Unimplemented {
		if !m.noWatchMany.Swap(true) {
			m.c.log.Info("agent does not serve WatchMany, watching with a stream per watch", "endpoint", m.addr)
		}
		err = errNoWatchMany
	}
	m.mu.Lock()
	if m.cur == s {
		m.cur = nil
	}
	watches := s.watches
	s.watches = nil
	m.mu.Unlock()
	s.cancel(nil)
	for _, w := range watches {
		w.end(err)
	}
}

// offer queues q unless that would pass the queue's bounds. A response
// larger than watchQueueBytes is taken when the queue is empty. It is
// called by the receive goroutine alone.
func (w *muxWatch) offer(q queuedResponse) bool {
	if len(w.queue) > 0 && w.bytes.Load()+q.size > watchQueueBytes {
		return false
	}
	w.bytes.Add(q.size)
	select {
	case w.queue <- q:
		return true
	default:
		w.bytes.Add(-q.size)
		return false
	}
}

// drop empties the queue of a watch that ended for a full queue. It runs
// on the receive goroutine while recv may take from the same queue; once
// it has begun, recv delivers nothing more (took).
func (w *muxWatch) drop() {
	w.dropMu.Lock()
	w.dropped = true
	w.dropMu.Unlock()
	for {
		select {
		case q := <-w.queue:
			w.bytes.Add(-q.size)
		default:
			return
		}
	}
}

// end records why nothing more will be queued. dispatch and
// muxStream.end call it, once, for a watch they take off its stream; a
// watch that leaves (its reader gone) is not ended.
func (w *muxWatch) end(err error) {
	w.err = err
	close(w.ended)
}

// recv returns the next response of the watch, or why it ended once what
// was queued before the end has been taken. It returns ctx's cause when
// the WatchStream's ctx ends.
func (w *muxWatch) recv() (*zrpcpb.WatchResponse, error) {
	select {
	case q := <-w.queue:
		return w.took(q)
	case <-w.ended:
		select {
		case q := <-w.queue:
			return w.took(q)
		default:
			return nil, w.err
		}
	case <-w.ctx.Done():
		return nil, context.Cause(w.ctx)
	}
}

// took returns q, just taken from the queue, unless drop has begun to
// empty it: q may then come after a response drop took, and delivering it
// would skip that one, so the watch ends (errQueueFull) and resumes from
// the last revision delivered. A q taken before drop began was the head
// of the queue, the next in order.
func (w *muxWatch) took(q queuedResponse) (*zrpcpb.WatchResponse, error) {
	w.bytes.Add(-q.size)
	w.dropMu.Lock()
	dropped := w.dropped
	w.dropMu.Unlock()
	if dropped {
		return nil, errQueueFull
	}
	return q.resp, nil
}

// close takes the watch off its stream.
func (w *muxWatch) close() {
	w.stopLeave()
	w.s.m.leave(w)
}
