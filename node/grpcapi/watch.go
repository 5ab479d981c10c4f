package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/acl"
	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// maxWatchPartBytes bounds the events of one watch message. gRPC holds a
// stream's message being sent (plus up to 64 KiB of frames) until its
// reader takes it, so this also bounds what a reader that stopped reading
// costs the agent: the events behind it are the ring's, shared by every
// watcher.
const maxWatchPartBytes = 256 << 10

// Default bounds of a watch stream's backlog: the events of its services
// the registry holds and it has not sent yet, behind the response being
// sent. A watcher further behind is ended with ErrWatchTooSlow. They are
// wide enough that a reader keeping up is not cut by a burst of writes.
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

// watchStream is what the agent's budget for all watch streams and the
// too-slow status know of one Watch stream: what it was sent, the backlog
// last measured behind the send in progress, and its share of the budget.
type watchStream struct {
	limits WatchLimits

	mu     sync.Mutex
	sent   uint64 // revision of the last response sent whole
	events int    // backlog behind the send in progress, as last measured
	bytes  int

	// budget is the agent's budget for all watch streams; charged is what
	// this stream holds of it (the response being sent and the backlog
	// measured behind it), and overBudget says the budget ended the stream.
	budget     *watchBudget
	charged    int64
	overBudget bool
	// carried is the part of charged that is the backlog measured behind
	// the last send: those events are still waiting in the registry when
	// the send ends, and stay charged until the response that takes them
	// is (giving them back in between would let other streams take room
	// that this one then charges again).
	carried int64
}

func newWatchStream(limits WatchLimits, from uint64) *watchStream {
	return &watchStream{limits: limits, sent: from}
}

// errWatchBehind ends a stream whose backlog is past its bounds or whose
// charge the agent's budget for all watch streams took back.
var errWatchBehind = errors.New("watch backlog behind its bounds")

// errWatchRestored ends a stream whose send was waiting while the
// registry's state was replaced (a snapshot installed): the events behind
// the send left with the old state, and the watch must start over with a
// snapshot. It is no sign of a slow reader.
var errWatchRestored = errors.New("registry state replaced during a watch send")

// measured records the backlog counted behind the send in progress.
func (ws *watchStream) measured(events, bytes int) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.events, ws.bytes = events, bytes
}

// sentWhole notes that the send in progress ended, having sent a
// response whole up to rev when rev is not 0, and gives back what the
// stream was charged.
func (ws *watchStream) sentWhole(rev uint64) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.sent = max(ws.sent, rev)
	keep := min(int64(ws.bytes), ws.charged)
	ws.events, ws.bytes = 0, 0
	if ws.budget == nil || ws.overBudget {
		return
	}
	ws.carried = keep
	if n := ws.charged - keep; n != 0 {
		ws.giveBack(n)
	}
}

// takeCarried returns how much of a response of n bytes is still to be
// charged, the backlog carried from the last send counting as charged for
// it; what was carried beyond n is given back. With page set the carried
// bytes are all given back: a snapshot page waits for room on its own.
func (ws *watchStream) takeCarried(n int64, page bool) int64 {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	c := ws.carried
	ws.carried = 0
	if c == 0 || ws.budget == nil || ws.overBudget {
		return n
	}
	switch {
	case page:
		ws.giveBack(c)
		return n
	case c > n:
		ws.giveBack(c - n)
		return 0
	}
	return n - c
}

// giveBack returns n of what ws is charged to the budget. The caller
// holds ws.mu.
func (ws *watchStream) giveBack(n int64) {
	ws.charged -= n
	ws.budget.release(n)
}

// backlog returns the revision sent whole and the backlog last measured,
// and whether the agent's budget for all watch streams ended the stream.
func (ws *watchStream) backlog() (sent uint64, events, bytes int, overBudget bool) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.sent, ws.events, ws.bytes, ws.overBudget
}

// serveWatch streams the registry changes w yields to stream until ctx
// ends, a send fails, or the watcher falls behind its backlog bounds or
// the agent's budget (which ends it through cancel, ctx's). The handler goroutine is the stream's only one
// while it waits for the registry: it takes what is ready (in messages of
// at most maxWatchPartBytes; a snapshot one page at a time) and sends it.
// A send runs on a goroutine of its own (owned by the agent, see
// RegistryConfig.Go) that lives only while the send lasts, so that the
// handler, woken meanwhile by the registry's writes, measures the backlog
// behind a send waiting for a reader that does not read, and can end the
// stream with the status saying where to resume (gRPC fails a send
// waiting on a stream whose context ends, and ends the stream Canceled).
// Writers never wait for a stream: the registry keeps its events in the
// ring. When serveWatch returns ErrWatchTooSlow its send may still wait:
// gRPC cancels the stream once the handler returns, which ends it.
func (s *Registry) serveWatch(ctx context.Context, cancel context.CancelCauseFunc, w *raftstore.Watcher, from uint64,
	stream pb.Registry_WatchServer) error {
	defer w.Close()
	past, known, err := s.resumesPastCommit(ctx, from, 0)
	if err != nil {
		if cause := context.Cause(ctx); cutOff(cause) {
			return cause
		}
		return err
	}
	if past {
		s.logPastCommit(from, known)
		w.Resync()
		from = 0 // nothing of the stream's history was sent
	}
	if err := s.awaitReplica(ctx, from); err != nil {
		if cause := context.Cause(ctx); cutOff(cause) {
			return cause
		}
		return err
	}
	encodeSnapshots(ctx, w)
	ws := newWatchStream(s.cfg.WatchBacklog, from)
	s.budget.join(ws, func() { cancel(errWatchBehind) })
	defer s.budget.leave(ws)
	sent := make(chan error, 1) // the result of the send in progress
	inSnapshot := false         // the last response was a snapshot page with more to come
	first := true
	for {
		resp, err := w.Next(ctx)
		if err == nil {
			page := resp.Snapshot || inSnapshot
			inSnapshot = resp.More
			resp.Header.ServedBy = s.cfg.Agent
			s.nameCluster(resp, first)
			first = false
			err = s.sendWatch(ctx, ws, w, resp, page, stream, sent)
		}
		if err != nil {
			return s.watchEnded(ctx, ws, err)
		}
	}
}

// resumeCheckWait bounds how long a watch resuming past this agent's
// replica waits to learn what the cluster has committed.
const resumeCheckWait = 5 * time.Second

// resumesPastCommit reports whether a watch resuming after revision from
// must start over with a snapshot: from is past this replica's revision
// and past everything the cluster has committed (the leader's read index),
// so it is a revision of no history the cluster has; the client watched a
// cluster since rebuilt from an older state (`zrpcd agent recover`, a data
// dir from a backup), whose revisions are below the ones it saw. Waiting
// for the registry to reach from would leave the client with the old
// state and then hand it events of another history. A replica that only
// lags behind the leader has from still to apply, and the watch waits for
// it. committed is a revision already known committed (0: none); the
// highest known is returned. It fails, with STALE_READ, when no leader
// answers within resumeCheckWait: a client with other agents resumes
// there, or retries.
func (s *Registry) resumesPastCommit(ctx context.Context, from, committed uint64) (past bool, known uint64, err error) {
	head := s.cfg.Replica.Revision()
	if from <= max(head, committed) || s.cfg.Cluster == nil {
		return false, committed, nil
	}
	checkCtx, cancel := context.WithTimeout(ctx, resumeCheckWait)
	defer cancel()
	var commit uint64
	err = s.cfg.Cluster.OnLeader(checkCtx,
		func() error {
			if err := s.cfg.Cluster.CheckRead(checkCtx, pb.Consistency_CONSISTENT); err != nil {
				return err
			}
			commit = s.cfg.Replica.Revision()
			return nil
		},
		func(ctx context.Context, conn grpc.ClientConnInterface) error {
			resp, err := pb.NewInternalClient(conn).ReadIndex(ctx, &pb.ReadIndexRequest{})
			commit = resp.GetIndex()
			return err
		})
	if err != nil {
		if ctx.Err() != nil {
			return false, committed, ctx.Err()
		}
		return false, committed, &resumeUnchecked{from: from, head: head, cause: err}
	}
	known = max(commit, committed)
	return from > known, known, nil
}

// resumeLagWait bounds how long a watch resuming after a revision the
// cluster has committed, past this agent's replica, waits for the
// replica to apply it: a follower far behind (a slow disk, a partition
// just healed) refuses the watch instead, so that the client resumes it
// on another agent rather than wait, silent, for this one.
const resumeLagWait = 5 * time.Second

// watchReplica is what watches use of a replica beyond Replica; the
// agent's (raftstore.FSM) has it. A replica without it serves watches as
// agents did before: a resume waits for it without a bound, and responses
// name no cluster.
type watchReplica interface {
	// WaitRevision waits until the replica has applied rev.
	WaitRevision(ctx context.Context, rev uint64) error
	// ClusterID is the cluster's id, "" until the replica knows it.
	ClusterID() string
}

var _ watchReplica = (*raftstore.FSM)(nil)

// awaitReplica waits, at most resumeLagWait, until the replica has
// applied revision from, which a watch resumes after. It fails
// Unavailable, saying how far behind the agent is, when the replica has
// not by then.
func (s *Registry) awaitReplica(ctx context.Context, from uint64) error {
	r, ok := s.cfg.Replica.(watchReplica)
	if !ok || s.cfg.Replica.Revision() >= from {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, resumeLagWait)
	defer cancel()
	if err := r.WaitRevision(wctx, from); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return s.replicaBehind(from)
	}
	return nil
}

// replicaBehind is the refusal of a watch resuming after revision from,
// which the cluster has committed and this agent's replica has not
// applied within resumeLagWait; nil once it has.
func (s *Registry) replicaBehind(from uint64) error {
	head := s.cfg.Replica.Revision()
	if head >= from {
		return nil
	}
	return status.Errorf(codes.Unavailable, "agent %s is %d revisions behind the requested revision %d (its registry is at revision %d after waiting %v); retry, or watch through another agent",
		s.cfg.Agent, from-head, from, head, resumeLagWait)
}

// clusterID returns the id of the agent's cluster, "" when it is not
// known (or the replica cannot say).
func (s *Registry) clusterID() string {
	if r, ok := s.cfg.Replica.(watchReplica); ok {
		return r.ClusterID()
	}
	return ""
}

// resumesOtherCluster reports whether a watch resuming after
// req.from_revision names, as the cluster whose history that revision is
// of, a cluster other than this agent's: one rebuilt from an older state
// (`zrpcd agent recover` gives it a new id), whose revisions started over,
// so that a revision at or below this replica's would otherwise be taken
// as one of its own and the client would miss or mix events. Such a
// watch starts over with a snapshot. A request without a cluster id (a
// client from before it) is taken as of this cluster, as before.
func (s *Registry) resumesOtherCluster(req *pb.WatchRequest) bool {
	if req.GetFromRevision() == 0 || req.GetClusterId() == "" {
		return false
	}
	id := s.clusterID()
	return id != "" && id != req.GetClusterId()
}

// logOtherCluster logs that a watch resuming after a revision of another
// cluster starts over.
func (s *Registry) logOtherCluster(req *pb.WatchRequest) {
	s.log.Info("a watch resumes after a revision of another cluster (this one was rebuilt from an older state?); sending it a snapshot",
		"from_revision", req.GetFromRevision(), "its_cluster_id", req.GetClusterId(), "cluster_id", s.clusterID())
}

// nameCluster sets the cluster id on resp when it is a watch's first
// response or begins a snapshot, so that the client resumes with it.
func (s *Registry) nameCluster(resp *pb.WatchResponse, first bool) {
	if first || resp.Snapshot {
		resp.ClusterId = s.clusterID()
	}
}

// resumeUnchecked refuses a watch resuming past this agent's registry
// while no leader could be asked what the cluster has committed
// (STALE_READ).
type resumeUnchecked struct {
	from, head uint64
	cause      error // why the leader could not be asked
}

func (e *resumeUnchecked) Error() string {
	return fmt.Sprintf("%v: the watch resumes after revision %d, past this agent's registry at revision %d, and the leader could not be asked whether the cluster has committed that far (%v); retry, or watch from revision 0 for a snapshot",
		apierr.ErrStaleRead, e.from, e.head, e.cause)
}

func (e *resumeUnchecked) Unwrap() error { return apierr.ErrStaleRead }

// logPastCommit logs that a watch resumed after revision from, past
// everything the cluster has committed (known), starts over.
func (s *Registry) logPastCommit(from, known uint64) {
	s.log.Info("a watch resumes past everything the cluster has committed: its revision is of another history (the cluster was rebuilt from an older state?); sending it a snapshot",
		"from_revision", from, "commit_index", known)
}

// encodeSnapshots lets w's snapshot pages carry the instances as the
// registry stores them, encoded, for a stream (of context ctx) that only
// sends what w yields, unless ACLs filter its events, which reads each
// one's instance.
func encodeSnapshots(ctx context.Context, w *raftstore.Watcher) {
	if !acl.Enforced(ctx) {
		w.EncodeSnapshots()
	}
}

// sendWatch charges resp to the agent's budget (a snapshot page waits for
// room, events never wait), sends it in parts and waits until they are
// sent, measuring the backlog behind them whenever the registry has new
// events for the watcher meanwhile.
func (s *Registry) sendWatch(ctx context.Context, ws *watchStream, w *raftstore.Watcher, resp *pb.WatchResponse,
	page bool, stream pb.Registry_WatchServer, sent chan error) error {
	parts, bytes := watchParts(resp)
	rest := ws.takeCarried(int64(bytes), page)
	if page {
		if err := s.budget.chargeWait(ctx, ws, rest); err != nil {
			return err
		}
	} else if rest > 0 && !s.budget.charge(ws, rest) {
		return errWatchBehind
	}
	s.cfg.Go(func() { sent <- sendParts(stream, parts) })
	b := backlogCount{read: w.Revision(), upTo: w.Revision()}
	for {
		select {
		case err := <-sent:
			rev := resp.Header.GetRevision()
			if err != nil || resp.More {
				rev = 0 // nothing was sent whole
			}
			ws.sentWhole(rev)
			return err
		case <-w.Ready():
			if err := s.measureBacklog(ws, w, &b); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// sendParts sends the parts of one response.
func sendParts(stream pb.Registry_WatchServer, parts []*pb.WatchResponse) error {
	for _, part := range parts {
		if err := stream.Send(part); err != nil {
			return fmt.Errorf("send watch response: %w", err)
		}
	}
	return nil
}

// backlogCount is the backlog counted behind one send: the events after
// revision read up to revision upTo.
type backlogCount struct {
	read, upTo    uint64
	events, bytes int
}

// measureBacklog counts the events added behind a send since b was last
// counted and charges them to the agent's budget. It fails with
// errWatchBehind when the backlog is past the stream's bounds (or has
// left the registry's ring) or the budget ends the stream.
func (s *Registry) measureBacklog(ws *watchStream, w *raftstore.Watcher, b *backlogCount) error {
	events, bytes, last, ok := w.Backlog(b.read, b.upTo, ws.limits.Events-b.events, ws.limits.Bytes-b.bytes)
	if !ok && w.Restored() {
		return errWatchRestored
	}
	b.events, b.bytes, b.upTo = b.events+events, b.bytes+bytes, last
	ws.measured(b.events, b.bytes)
	switch {
	case !ok || b.events > ws.limits.Events || b.bytes > ws.limits.Bytes:
		return errWatchBehind
	case bytes > 0 && !s.budget.charge(ws, int64(bytes)):
		return errWatchBehind
	}
	return nil
}

// watchEnded returns the status that ends a Watch stream after err:
// Unavailable when a restore replaced the registry during a send (the
// client resumes the watch), too slow
// when its backlog passed its bounds or the agent's budget, else err (the
// send failed or ctx ended).
func (s *Registry) watchEnded(ctx context.Context, ws *watchStream, err error) error {
	if errors.Is(err, errWatchRestored) {
		sent, _, _, _ := ws.backlog()
		s.log.Info("the registry was replaced by a snapshot install during a watch send; ending the watch so that it starts over", "sent_revision", sent)
		return status.Errorf(codes.Unavailable, "agent %s ended the watch: its registry was replaced by a snapshot install (a restore) while the watch was sending, after revision %d; resume the watch from the last revision received (this agent or another)",
			s.cfg.Agent, sent)
	}
	if errors.Is(err, errWatchBehind) || errors.Is(context.Cause(ctx), errWatchBehind) {
		return s.watchTooSlow(ws)
	}
	if cause := context.Cause(ctx); cutOff(cause) {
		return cause
	}
	return err
}

// watchTooSlow returns the status that ends a watcher behind its backlog
// bounds: Aborted, ErrWatchTooSlow's reason and a WatchResume detail
// naming the revision a new watch continues from without a gap.
func (s *Registry) watchTooSlow(ws *watchStream) error {
	sent, events, bytes, overBudget := ws.backlog()
	s.log.Warn("watch too slow, ending it", "sent_revision", sent, "backlog_events", events, "backlog_bytes", bytes,
		"over_agent_budget", overBudget)
	s.cfg.Metrics.WatchTooSlow()
	err := fmt.Errorf("%w, resume from revision %d: %d events (%d bytes) were waiting for the reader, the limit is %d events or %d bytes",
		apierr.ErrWatchTooSlow, sent, events, bytes, ws.limits.Events, ws.limits.Bytes)
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
// marked snapshot (and names the cluster): a reader that does not know more (a client from before
// parts) then applies the later parts as events and ends with the whole.
func watchPart(resp *pb.WatchResponse, evs []*pb.Event, first, more bool) *pb.WatchResponse {
	part := &pb.WatchResponse{Header: resp.Header, Snapshot: resp.Snapshot && first, Events: evs, More: more}
	if first {
		part.ClusterId = resp.ClusterId
	}
	return part
}
