package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// maxWatchPartBytes bounds the events of one watch message, and
// maxWatchMergeBytes those of small responses merged into one. gRPC holds
// a stream's message being sent (plus up to 64 KiB of frames) until its
// reader takes it, so these also bound what a reader that stopped reading
// costs beyond its backlog, which holds the ring's shared events.
const (
	maxWatchPartBytes  = 256 << 10
	maxWatchMergeBytes = 32 << 10
)

// Default bounds of a watch stream's backlog: what the agent has read from
// the registry for it but could not send yet, behind the response being
// sent. A watcher further behind is ended with ErrWatchTooSlow. The events
// are the ring's own (shared by every watcher), so the bounds cost little
// memory per stream; they are wide enough that a reader keeping up is not
// cut by a burst of writes read faster than it can be sent.
const (
	defaultWatchBacklogEvents = 16384
	defaultWatchBacklogBytes  = 16 << 20
)

// WatchLimits bounds a watch stream's backlog: Events events and Bytes
// bytes (encoded size); zero keeps a default. A watcher that falls further
// behind is ended with "watch too slow, resume from revision N".
type WatchLimits struct {
	Events int
	Bytes  int
}

func (l WatchLimits) withDefaults() WatchLimits {
	if l.Events <= 0 {
		l.Events = defaultWatchBacklogEvents
	}
	if l.Bytes <= 0 {
		l.Bytes = defaultWatchBacklogBytes
	}
	return l
}

// queuedWatch is one registry response on its way to a watcher, in parts.
type queuedWatch struct {
	parts []*pb.WatchResponse
	// rev is the revision the watcher has seen once it has all parts; 0
	// for a snapshot page other than the last, after which the watcher
	// has no whole state to resume from.
	rev    uint64
	events int
	bytes  int
}

// watchQueue is a watch stream's backlog between the goroutine that reads
// the registry (push) and the one that sends (front, pop). Its head is the
// response being sent; the limits bound what waits behind it, so one large
// snapshot is always taken and a reader that keeps up is never cut.
type watchQueue struct {
	limits WatchLimits

	mu     sync.Mutex
	items  []*queuedWatch
	events int    // backlog behind the head
	bytes  int    // backlog behind the head
	sent   uint64 // revision of the last response sent whole
	wake   chan struct{}
	// drained, when not nil, is closed once the queue is empty.
	drained chan struct{}

	// budget, when not nil, is the agent's budget for all watch queues;
	// charged is what this queue holds of it (every queued response, the
	// head too), and overBudget says the budget ended this queue.
	budget     *watchBudget
	charged    int64
	overBudget bool
}

func newWatchQueue(limits WatchLimits, from uint64) *watchQueue {
	return &watchQueue{limits: limits, sent: from, wake: make(chan struct{}, 1)}
}

// push queues q and reports whether it fit in the backlog. It never waits.
// Small responses waiting behind the head are sent as one message: the
// busier the agent, the fewer messages a watcher costs it.
// A push past the agent's budget for all watch queues may end other
// streams, or this one.
func (w *watchQueue) push(q *queuedWatch) bool {
	w.mu.Lock()
	full := len(w.items) > 0 && (w.events+q.events > w.limits.Events || w.bytes+q.bytes > w.limits.Bytes)
	w.mu.Unlock()
	if full || (w.budget != nil && !w.budget.charge(w, int64(q.bytes))) {
		return false
	}
	w.enqueue(q)
	return true
}

// pushPage queues a snapshot page on the queue, which holds nothing (see
// waitEmpty), waiting for room in the agent's budget for all watch queues
// (watchBudget.chargeWait). It fails with errWatchBehind when the
// budget ended the stream, or with ctx's error.
func (w *watchQueue) pushPage(ctx context.Context, q *queuedWatch) error {
	if w.budget != nil {
		if err := w.budget.chargeWait(ctx, w, int64(q.bytes)); err != nil {
			return err
		}
	}
	w.enqueue(q)
	return nil
}

// enqueue adds q, charged already, behind what is queued.
func (w *watchQueue) enqueue(q *queuedWatch) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.items) > 0 { // the head may have been sent meanwhile
		w.events += q.events
		w.bytes += q.bytes
	}
	if n := len(w.items); n > 1 && w.items[n-1].absorb(q) {
		return
	}
	w.items = append(w.items, q)
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// waitEmpty waits until everything queued has been sent or ctx ends. A
// snapshot's pages are built and queued one at a time, each once the one
// before has been sent, so a watcher that reads slowly holds one page,
// not the whole snapshot.
func (w *watchQueue) waitEmpty(ctx context.Context) error {
	for {
		w.mu.Lock()
		empty := len(w.items) == 0
		if !empty && w.drained == nil {
			w.drained = make(chan struct{})
		}
		drained := w.drained
		w.mu.Unlock()
		if empty {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-drained:
		}
	}
}

// front returns the response to send next, waiting for one until ctx ends.
func (w *watchQueue) front(ctx context.Context) (*queuedWatch, error) {
	for {
		w.mu.Lock()
		if len(w.items) > 0 {
			q := w.items[0]
			w.mu.Unlock()
			return q, nil
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-w.wake:
		}
	}
}

// pop removes the head once all its parts are sent; the next response
// leaves the backlog to become the head.
func (w *watchQueue) pop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sent = max(w.sent, w.items[0].rev)
	if w.budget != nil && !w.overBudget {
		n := int64(w.items[0].bytes)
		w.charged -= n
		w.budget.release(n)
	}
	w.items[0] = nil
	w.items = w.items[1:]
	if len(w.items) > 0 {
		w.events -= w.items[0].events
		w.bytes -= w.items[0].bytes
	} else if w.drained != nil {
		close(w.drained)
		w.drained = nil
	}
}

// backlog returns the revision sent whole and the backlog's size, and
// whether the agent's budget for all watch queues ended the stream.
func (w *watchQueue) backlog() (sent uint64, events, bytes int, overBudget bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sent, w.events, w.bytes, w.overBudget
}

// errWatchBehind ends a stream whose queue is past its bounds or was
// taken back by the agent's budget for all watch queues.
var errWatchBehind = errors.New("watch queue behind its bounds")

// serveWatch streams the registry changes w yields to stream until ctx
// ends, a send fails, or the watcher falls behind the backlog bounds. The
// registry is read on the calling goroutine and sent on another (owned by
// the agent, see RegistryConfig.Go), so a reader that stops reading never holds the
// registry's readers up and is noticed while gRPC's Send waits on it. When
// serveWatch returns ErrWatchTooSlow that sender may still be blocked in
// Send: gRPC cancels the stream once the handler returns, which ends it.
func (s *Registry) serveWatch(ctx context.Context, w *raftstore.Watcher, from uint64, stream pb.Registry_WatchServer) error {
	defer w.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	q := newWatchQueue(s.cfg.WatchBacklog, from)
	s.budget.join(q, func() { cancel(errWatchBehind) })
	defer s.budget.leave(q)
	s.cfg.Go(func() { cancel(sendWatch(ctx, q, stream)) })
	inSnapshot := false // the last response was a snapshot page with more to come
	for {
		resp, err := s.nextWatch(ctx, w, q, inSnapshot)
		if err == nil {
			page := resp.Snapshot || inSnapshot
			inSnapshot = resp.More
			resp.Header.ServedBy = s.cfg.Agent
			item := newQueuedWatch(resp)
			switch {
			case page:
				err = q.pushPage(ctx, item)
			case !q.push(item):
				err = errWatchBehind
			}
		}
		if err != nil {
			return s.watchEnded(ctx, q, err)
		}
	}
}

// nextWatch returns w's next response to queue on q. A snapshot's pages
// are built one at a time, each once q has sent everything before it.
func (s *Registry) nextWatch(ctx context.Context, w *raftstore.Watcher, q *watchQueue, inSnapshot bool) (*pb.WatchResponse, error) {
	if inSnapshot {
		if err := q.waitEmpty(ctx); err != nil {
			return nil, err
		}
	}
	resp, err := w.Next(ctx)
	if err == nil && resp.Snapshot {
		err = q.waitEmpty(ctx)
	}
	return resp, err
}

// watchEnded returns the status that ends a Watch stream after err: too
// slow when its queue is past its bounds or the agent's budget, the
// sender's error when a send failed, else err (ctx ended).
func (s *Registry) watchEnded(ctx context.Context, q *watchQueue, err error) error {
	cause := context.Cause(ctx)
	switch {
	case errors.Is(err, errWatchBehind), errors.Is(cause, errWatchBehind):
		return s.watchTooSlow(q)
	case cause != nil && !errors.Is(cause, context.Canceled):
		return cause // the send failed
	}
	return err
}

// sendWatch sends the queue's responses until ctx ends or Send fails.
func sendWatch(ctx context.Context, q *watchQueue, stream pb.Registry_WatchServer) error {
	for {
		item, err := q.front(ctx)
		if err != nil {
			return err
		}
		for _, part := range item.parts {
			if err := stream.Send(part); err != nil {
				return fmt.Errorf("send watch response: %w", err)
			}
		}
		q.pop()
	}
}

// absorb appends next's events to q when both are single whole messages
// of events (no snapshot page) that fit in one together.
func (q *queuedWatch) absorb(next *queuedWatch) bool {
	if len(q.parts) != 1 || len(next.parts) != 1 || q.rev == 0 || next.rev == 0 ||
		q.parts[0].Snapshot || next.parts[0].Snapshot || q.bytes+next.bytes > maxWatchMergeBytes {
		return false
	}
	merged := q.parts[0]
	merged.Header = next.parts[0].Header
	merged.Events = append(merged.Events, next.parts[0].Events...)
	q.rev, q.events, q.bytes = next.rev, q.events+next.events, q.bytes+next.bytes
	return true
}

func newQueuedWatch(resp *pb.WatchResponse) *queuedWatch {
	q := &queuedWatch{rev: resp.Header.GetRevision(), events: len(resp.Events)}
	if resp.More {
		q.rev = 0
	}
	q.parts, q.bytes = watchParts(resp)
	return q
}

// watchTooSlow returns the status that ends a watcher behind its backlog
// bounds: Aborted, ErrWatchTooSlow's reason and a WatchResume detail
// naming the revision a new watch continues from without a gap.
func (s *Registry) watchTooSlow(q *watchQueue) error {
	sent, events, bytes, overBudget := q.backlog()
	s.log.Warn("watch too slow, ending it", "sent_revision", sent, "backlog_events", events, "backlog_bytes", bytes,
		"over_agent_budget", overBudget)
	s.cfg.Metrics.WatchTooSlow()
	err := fmt.Errorf("%w, resume from revision %d: %d events (%d bytes) were waiting for the reader, the limit is %d events or %d bytes",
		apierr.ErrWatchTooSlow, sent, events, bytes, q.limits.Events, q.limits.Bytes)
	if overBudget {
		err = fmt.Errorf("%w, resume from revision %d: its %d queued events (%d bytes) were the most of the agent's watch streams when together they reached the agent's limit of %d bytes (watch_queue_bytes)",
			apierr.ErrWatchTooSlow, sent, events, bytes, s.budget.limit)
	}
	err = apierr.ToStatus(err)
	st := status.Convert(err)
	if d, derr := st.WithDetails(&pb.WatchResume{Revision: sent}); derr == nil {
		st = d
	}
	return st.Err()
}

// watchParts splits a watch response into messages of at most
// maxWatchPartBytes of events each (at least one event, however large), all
// but the last marked more (the last too when resp is): a snapshot page of
// large instances, or a revision that removed many large instances, would
// not fit in one gRPC message. A small response is its own one part. It
// returns the parts and the events' size. The events' sizes are cached in
// them, so an event sent to many watchers is sized once.
func watchParts(resp *pb.WatchResponse) ([]*pb.WatchResponse, int) {
	var parts []*pb.WatchResponse
	start, size, total := 0, 0, 0
	for i, ev := range resp.Events {
		sz := cachedSize.Size(ev)
		if i > start && size+sz > maxWatchPartBytes {
			parts = append(parts, watchPart(resp, resp.Events[start:i], parts == nil, true))
			start, size = i, 0
		}
		size += sz
		total += sz
	}
	if parts == nil {
		return []*pb.WatchResponse{resp}, total
	}
	return append(parts, watchPart(resp, resp.Events[start:], false, resp.More)), total
}

// cachedSize sizes a message once: registry events are never changed after
// they are made, so the size stored in them stays right.
var cachedSize = proto.MarshalOptions{UseCachedSize: true}

// watchPart is one part of resp. Only the first part of a snapshot is
// marked snapshot: a reader that does not know more (a client from before
// parts) then applies the later parts as events and ends with the whole.
func watchPart(resp *pb.WatchResponse, evs []*pb.Event, first, more bool) *pb.WatchResponse {
	return &pb.WatchResponse{Header: resp.Header, Snapshot: resp.Snapshot && first, Events: evs, More: more}
}
