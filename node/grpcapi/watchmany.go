package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/acl"
	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// A WatchMany stream carries many watches, as etcd's Watch stream does. A
// Watch stream costs the agent a handler goroutine (its stack grown to
// 8 KiB by the snapshot it sent) and gRPC's state of a stream, about
// 14 KiB a watch; a watch of a WatchMany stream costs its watcher and a
// few words here. The stream has three goroutines whatever its watches:
// the handler, which only waits for the stream to end; a receiver, which
// opens and cancels watches as the client asks; and a sender, which sends
// what the registry has for each watch. The registry wakes a watch by
// putting it in the stream's ready queue (raftstore.FSM.WatchFunc), and
// the sender takes the watches in turn, one response (a snapshot page or
// up to a thousand events) each before the next, so a large snapshot
// does not hold up the other watches' events.
//
// Bounds: every watch takes a max_watches slot, and so does the stream
// itself (its goroutines and gRPC's state). Nothing is queued per watch:
// a watch the sender has not reached yet reads its events from the
// registry's event ring when it is, or a snapshot when they have left the
// ring. The stream holds the one response it is sending, charged to the
// agent's budget for all watch streams (watch_queue_bytes) as a Watch
// stream's is; when the budget takes it back the stream ends with "watch
// too slow" and the client resumes each watch from the last revision it
// received. Refusals waiting to be sent are bounded too
// (maxPendingWatchEnds).

// maxPendingWatchEnds bounds the refused watches whose end is waiting to
// be sent: a client that opens watches the agent refuses, faster than it
// reads the refusals, is ended.
const maxPendingWatchEnds = 1024

// WatchMany serves the watches a client opens on one stream until the
// stream ends, the agent closes or the stream falls behind the agent's
// budget for watch streams.
func (s *Registry) WatchMany(stream pb.Registry_WatchManyServer) error {
	release, err := s.watches.take()
	if err != nil {
		return err
	}
	defer release()
	ctx, cancel, done := s.streamContext(stream.Context())
	defer done()

	m := &watchMux{reg: s, ctx: ctx, stream: stream, open: make(map[uint64]*muxWatch), wake: make(chan struct{}, 1),
		ws: newWatchStream(s.cfg.WatchBacklog, 0), enforced: acl.Enforced(ctx)}
	s.budget.join(m.ws, func() { cancel(errWatchBehind) })
	defer s.budget.leave(m.ws)
	defer m.close()

	received := make(chan error, 1)
	sent := make(chan error, 1)
	s.cfg.Go(func() { received <- m.receive() })
	s.cfg.Go(func() { sent <- m.send() })
	for {
		select {
		case err = <-received:
			if err == nil {
				received = nil // the client sends no more; its watches go on
				continue
			}
		case err = <-sent:
		case <-ctx.Done():
			err = ctx.Err()
		}
		break
	}
	switch {
	case s.ctx.Err() != nil:
		return apierr.ErrShuttingDown
	case errors.Is(err, errWatchBehind) || errors.Is(context.Cause(ctx), errWatchBehind):
		return m.tooSlow()
	}
	return err
}

// watchMux is the state of one WatchMany stream.
type watchMux struct {
	reg    *Registry
	ctx    context.Context
	stream pb.Registry_WatchManyServer
	ws     *watchStream // its share of the agent's budget
	// enforced: ACLs check the stream, and each watch of one service is
	// checked again against the token's current rights before each of
	// its responses (muxWatch.allowed).
	enforced bool

	// mu guards the watches and the refusals to send, and every use of a
	// watcher (Poll, Close). It is taken before readyMu, never after, and
	// the registry's locks are taken under it (a watcher's Poll and
	// Close), never the other way round.
	mu     sync.Mutex
	open   map[uint64]*muxWatch
	ends   []*pb.WatchManyResponse
	closed bool
	// contact ends when the agent loses contact with the leader, which
	// ends the watches that require one; nil while none does
	// (watchcontact.go).
	contact context.Context

	// committed is the highest revision the stream has learned the
	// cluster committed, and checkErr why the last check of a resume past
	// the replica could not ask the leader, at checkFailed: a check waits
	// up to resumeCheckWait, and the creates after a failed one are
	// refused for as long with the same cause instead of each waiting in
	// turn. Used by the receiver only.
	committed   uint64
	checkErr    error
	checkFailed time.Time
	loggedPast  bool // a watch past the commit index was logged
	loggedOther bool // a watch of another cluster's history was logged

	// readyMu guards ready and each watch's queued; the registry's write
	// path takes it (muxWatch.wakeUp) holding its lock of the watchers.
	readyMu sync.Mutex
	ready   []*muxWatch // the queue is ready[head:]
	head    int
	wake    chan struct{} // holds a token when the sender may have work

	// progressEvery is the interval of progress notifications the client
	// asked for (a time.Duration), 0 while it asked for none
	// (watchprogress.go). Set by the receiver, read by the sender.
	progressEvery atomic.Int64
}

// muxWatch is one watch of a WatchMany stream.
type muxWatch struct {
	m       *watchMux
	id      uint64
	service string // "" for every service
	w       *raftstore.Watcher
	release func() // its max_watches slot
	// requireLeader: the watch ends when the agent loses contact with
	// the leader.
	requireLeader bool
	// inSnapshot: the last response sent was a snapshot page with more
	// to come; named: a response was sent, naming the cluster. Guarded by
	// m.mu.
	inSnapshot, named bool
	// queued: in m.ready. Guarded by m.readyMu.
	queued bool
	// gone: cancelled or the stream ended. Guarded by m.mu.
	gone bool
	// lag ends the watch when the replica has not applied the revision
	// it resumes after within resumeLagWait (endBehind); nil when it had.
	lag *time.Timer
}

// receive opens and cancels watches as the client asks, until the client
// stops sending (nil) or the stream fails.
func (m *watchMux) receive() error {
	for {
		req, err := m.stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		m.askProgress(req.GetProgressNotifyMs())
		switch k := req.Kind.(type) {
		case *pb.WatchManyRequest_Create:
			err = m.create(k.Create)
		case *pb.WatchManyRequest_Cancel:
			m.cancel(k.Cancel.GetWatchId())
		default:
			err = apierr.Invalid("kind", "is required: a WatchMany request is a create or a cancel")
		}
		if err != nil {
			return err
		}
	}
}

// create opens the watch c asks for, or queues its refusal. It fails,
// ending the stream, on a request that breaks the protocol: a watch id
// that is zero or already open.
func (m *watchMux) create(c *pb.WatchCreate) error {
	if c.WatchId == 0 {
		return apierr.Invalid("create.watch_id", "is required (not zero)")
	}
	m.mu.Lock()
	_, dup := m.open[c.WatchId]
	m.mu.Unlock()
	if dup {
		return apierr.Invalid("create.watch_id", "%d is the id of a watch still open on this stream", c.WatchId)
	}
	req := c.GetWatch()
	if err := m.check(req.GetService()); err != nil {
		if errors.Is(err, apierr.ErrUnauthenticated) {
			return err // the stream's token was deleted: the stream ends
		}
		return m.refuse(c.WatchId, err)
	}
	var contact context.Context
	if req.GetRequireLeader() {
		var err error
		if contact, err = m.reg.leaderContact(); err != nil {
			return m.refuse(c.WatchId, err)
		}
	}
	from, err := m.resumeFrom(req)
	if err != nil {
		return m.refuse(c.WatchId, err)
	}
	release, err := m.reg.watches.take()
	if err != nil {
		return m.refuse(c.WatchId, err)
	}
	mw := &muxWatch{m: m, id: c.WatchId, service: req.GetService(), release: release, requireLeader: contact != nil}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		release()
		return nil
	}
	if contact != nil {
		m.armContact(contact)
	}
	if from > m.reg.cfg.Replica.Revision() {
		// The cluster has committed from and the replica lags behind:
		// the watch has nothing to send until it catches up, and ends if
		// it has not within resumeLagWait.
		mw.lag = time.AfterFunc(resumeLagWait, func() { m.endBehind(mw, from) })
	}
	mw.w = m.reg.cfg.Replica.WatchFunc(req.GetService(), from, mw.wakeUp)
	encodeSnapshots(m.ctx, mw.w)
	m.open[c.WatchId] = mw
	m.reg.cfg.Metrics.WatchStarted()
	mw.wakeUp() // its snapshot, or the events it resumes after
	return nil
}

// resumeFrom returns the revision a watch asked to resume after req's
// from_revision starts from: that revision, or 0 (a snapshot) when it is
// of another cluster's history (Registry.resumesOtherCluster) or past
// everything the cluster has committed (Registry.resumesPastCommit).
func (m *watchMux) resumeFrom(req *pb.WatchRequest) (uint64, error) {
	if m.reg.resumesOtherCluster(req) {
		if !m.loggedOther { // once a stream: a client resumes all its watches at once
			m.loggedOther = true
			m.reg.logOtherCluster(req)
		}
		return 0, nil
	}
	return m.resumeChecked(req.GetFromRevision())
}

// resumeChecked returns from, or 0 when from is past everything the
// cluster has committed (Registry.resumesPastCommit).
func (m *watchMux) resumeChecked(from uint64) (uint64, error) {
	if head := m.reg.cfg.Replica.Revision(); from > max(head, m.committed) && m.checkErr != nil && time.Since(m.checkFailed) < resumeCheckWait {
		return 0, &resumeUnchecked{from: from, head: head, cause: m.checkErr}
	}
	past, known, err := m.reg.resumesPastCommit(m.ctx, from, m.committed)
	var unchecked *resumeUnchecked
	if errors.As(err, &unchecked) {
		m.checkErr, m.checkFailed = unchecked.cause, time.Now()
	}
	if err != nil {
		return 0, err
	}
	m.committed, m.checkErr = known, nil
	if past {
		if !m.loggedPast { // once a stream: a client resumes all its watches at once
			m.loggedPast = true
			m.reg.logPastCommit(from, known)
		}
		return 0, nil
	}
	return from, nil
}

// check returns why a watch of service (every service when empty) is
// refused, nil when it is not. It asks the token's current rights
// (acl.Allowed): an error wrapping apierr.ErrUnauthenticated says the
// token was deleted, which ends the stream.
func (m *watchMux) check(service string) error {
	if service == "" {
		return nil // filtered instead (acl.Methods)
	}
	if err := validName("watch.service", service); err != nil {
		return err
	}
	return acl.Allowed(m.ctx, acl.Service, service, acl.Read)
}

// refuse queues the end of watch id for err. Too many refusals waiting
// end the stream.
func (m *watchMux) refuse(id uint64, err error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.ends) >= maxPendingWatchEnds {
		return fmt.Errorf("%w: %d refused watches wait for the client to read their refusal", apierr.ErrQuotaExceeded, len(m.ends))
	}
	m.ends = append(m.ends, &pb.WatchManyResponse{WatchId: id, Ended: errorDetail(err)})
	m.signal()
	return nil
}

// cancel closes watch id; an id not open is ignored (it may have ended).
func (m *watchMux) cancel(id uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if mw := m.open[id]; mw != nil {
		delete(m.open, id)
		mw.end()
	}
}

// endBehind ends watch mw, which resumes after revision from, unless
// the replica has applied from by now (Registry.replicaBehind): the
// client resumes it on another agent.
func (m *watchMux) endBehind(mw *muxWatch, from uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if mw.gone || m.closed {
		return
	}
	err := m.reg.replicaBehind(from)
	if err == nil {
		return
	}
	delete(m.open, mw.id)
	mw.end()
	m.ends = append(m.ends, &pb.WatchManyResponse{WatchId: mw.id, Ended: errorDetail(err)})
	m.signal()
}

// end closes the watch and frees its slot. The caller holds m.mu.
func (mw *muxWatch) end() {
	mw.gone = true
	if mw.lag != nil {
		mw.lag.Stop()
	}
	mw.w.Close()
	mw.release()
	mw.m.reg.cfg.Metrics.WatchEnded()
}

// allowed returns nil when the stream's token may, with its current
// rights, read the service the watch watches; a watch of every service
// is filtered instead (acl.Methods). The caller holds m.mu.
func (mw *muxWatch) allowed() error {
	if !mw.m.enforced || mw.service == "" {
		return nil
	}
	return acl.Allowed(mw.m.ctx, acl.Service, mw.service, acl.Read)
}

// close ends every watch of the stream.
func (m *watchMux) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	for id, mw := range m.open {
		delete(m.open, id)
		mw.end()
	}
}

// wakeUp queues the watch for the sender, once.
func (mw *muxWatch) wakeUp() {
	m := mw.m
	m.readyMu.Lock()
	if !mw.queued {
		mw.queued = true
		m.ready = append(m.ready, mw)
	}
	m.readyMu.Unlock()
	m.signal()
}

// signal tells the sender there may be work.
func (m *watchMux) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// popReady takes the first watch of the ready queue, nil when none.
func (m *watchMux) popReady() *muxWatch {
	m.readyMu.Lock()
	defer m.readyMu.Unlock()
	if m.head == len(m.ready) {
		return nil
	}
	mw := m.ready[m.head]
	m.ready[m.head] = nil
	m.head++
	switch {
	case m.head == len(m.ready): // empty: reuse the array from its start
		m.ready, m.head = m.ready[:0], 0
	case m.head >= 64 && 2*m.head >= len(m.ready): // never empty: move the queue down
		n := copy(m.ready, m.ready[m.head:])
		clear(m.ready[n:])
		m.ready, m.head = m.ready[:n], 0
	}
	mw.queued = false
	return mw
}

// send sends the refusals and the watches' responses, and the progress
// notifications the client asked for, until the stream ends or a send
// fails.
func (m *watchMux) send() error {
	var p progressTimer
	defer p.stop()
	for {
		if p.agree(m.progressInterval()) {
			// The first request that asks for progress is answered at
			// once: the client then knows this agent sends it.
			if err := m.sendProgress(&p); err != nil {
				return err
			}
		}
		resp, page, ok := m.next()
		if !ok {
			select {
			case <-m.ctx.Done():
				return m.ctx.Err()
			case <-m.wake:
				continue
			case <-m.contactLost():
				continue // next ends the watches that required it
			case <-p.due():
				if p.idle() {
					if err := m.sendProgress(&p); err != nil {
						return err
					}
				}
				continue
			}
		}
		if err := m.sendOne(resp, page); err != nil {
			return err
		}
		p.sent()
	}
}

// next returns what to send next: a refusal, else the next response of
// the first ready watch that has one (which goes back to the end of the
// queue: it may have more). page: the response is (part of) a snapshot.
func (m *watchMux) next() (resp *pb.WatchManyResponse, page, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, false, false
	}
	m.endCutOff()
	if len(m.ends) > 0 {
		resp = m.ends[0]
		m.ends[0] = nil
		m.ends = m.ends[1:]
		return resp, false, true
	}
	for mw := m.popReady(); mw != nil; mw = m.popReady() {
		if mw.gone {
			continue
		}
		r, ok := mw.w.Poll()
		if !ok {
			continue
		}
		if err := mw.allowed(); err != nil {
			// The token no longer lets the caller read the service: the
			// watch ends as its create would now be refused. (A deleted
			// token ends the stream: the interceptor refuses this send.)
			delete(m.open, mw.id)
			mw.end()
			return &pb.WatchManyResponse{WatchId: mw.id, Ended: errorDetail(err)}, false, true
		}
		page = r.Snapshot || mw.inSnapshot
		mw.inSnapshot = r.More
		r.Header.ServedBy = m.reg.cfg.Agent
		m.reg.nameCluster(r, !mw.named)
		mw.named = true
		mw.wakeUp()
		return &pb.WatchManyResponse{WatchId: mw.id, Response: r}, page, true
	}
	return nil, false, false
}

// sendOne charges resp to the agent's budget (a snapshot page waits for
// room, events do not), sends it in parts of at most maxWatchPartBytes
// and gives the charge back.
func (m *watchMux) sendOne(resp *pb.WatchManyResponse, page bool) error {
	if resp.Response == nil {
		return m.stream.Send(resp)
	}
	parts, bytes := watchParts(resp.Response)
	if page {
		if err := m.reg.budget.chargeWait(m.ctx, m.ws, int64(bytes)); err != nil {
			return err
		}
	} else if !m.reg.budget.charge(m.ws, int64(bytes)) {
		return errWatchBehind
	}
	defer m.ws.sentWhole(0)
	for _, part := range parts {
		msg := resp // a response of one part goes as it is
		if part != resp.Response {
			msg = &pb.WatchManyResponse{WatchId: resp.WatchId, Response: part}
		}
		if err := m.stream.Send(msg); err != nil {
			return fmt.Errorf("send watch response: %w", err)
		}
	}
	return nil
}

// tooSlow returns the status that ends a stream the agent's budget for
// watch streams took back: Aborted with ErrWatchTooSlow's reason. The
// client knows the last revision each watch received and resumes each
// from there.
func (m *watchMux) tooSlow() error {
	m.reg.log.Warn("watch stream too slow, ending it", "over_agent_budget", true)
	m.reg.cfg.Metrics.WatchTooSlow()
	return apierr.ToStatus(fmt.Errorf("%w: this WatchMany stream had the most queued when the agent's watch streams together reached its limit of %d bytes (watch_queue_bytes); resume each watch from the last revision it received",
		apierr.ErrWatchTooSlow, m.reg.budget.limit))
}

// errorDetail is err as the ErrorDetail of a request that failed alone
// (a Session request, a watch of a WatchMany stream).
func errorDetail(err error) *pb.ErrorDetail {
	st := status.Convert(apierr.ToStatus(err))
	return &pb.ErrorDetail{Code: int32(st.Code()), Message: st.Message(), Reason: apierr.Code(err)}
}
