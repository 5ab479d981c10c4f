package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// liveSessions are the sessions whose streams this agent is serving now.
type liveSessions struct {
	mu  sync.Mutex
	ids map[string]*liveSession
}

// liveSession is one served session. created is the revision of its
// SessionCreate entry (0 until it is known); removed is closed when the
// session has disappeared from this replica after it was created: the
// cluster removed it (its agent was reaped while unreachable).
type liveSession struct {
	created atomic.Uint64
	removed chan struct{}
	once    sync.Once
}

func newLiveSessions() *liveSessions { return &liveSessions{ids: make(map[string]*liveSession)} }

func (l *liveSessions) add(id string) *liveSession {
	s := &liveSession{removed: make(chan struct{})}
	l.mu.Lock()
	l.ids[id] = s
	l.mu.Unlock()
	return s
}

func (l *liveSessions) remove(id string) { l.mu.Lock(); delete(l.ids, id); l.mu.Unlock() }

func (l *liveSessions) has(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ids[id] != nil
}

// markRemoved closes removed for every served session that was created at
// or before rev and is not in exists.
func (l *liveSessions) markRemoved(rev uint64, exists map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, s := range l.ids {
		if c := s.created.Load(); c != 0 && c <= rev && !exists[id] {
			s.once.Do(func() { close(s.removed) })
		}
	}
}

func newSessionID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Session serves one process's session: the registrations made on the
// stream live as long as the stream. When it ends, for any reason (clean
// close, crash, kill -9, network failure noticed by keepalive), the session
// and its instances are removed in one Raft entry. If the cluster removes
// the session first (the leader reaped this agent while it was
// unreachable), the stream ends with FailedPrecondition, so that the
// process opens a new session and registers again.
func (s *registryServer) Session(stream pb.Registry_SessionServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return apierr.Invalid("session", "the first message must be open")
	}
	if len(open.Owner) > maxMetaValLen {
		return apierr.Invalid("session.owner", "is longer than %d bytes", maxMetaValLen)
	}
	id := newSessionID()
	live := s.n.sessions.add(id)
	defer s.n.sessions.remove(id)
	rev, err := s.n.propose(ctx, &pb.Command{Kind: &pb.Command_SessionCreate{SessionCreate: &pb.SessionCreate{
		Session: &pb.Session{Id: id, Node: s.n.cfg.Name, Owner: open.Owner, Created: time.Now().UnixNano()},
	}}})
	if err != nil {
		return err
	}
	live.created.Store(rev)
	removedByCluster := false
	defer func() {
		if !removedByCluster {
			s.n.destroySessions(id)
		}
	}()
	s.n.log.Debug("session opened", "session", id, "owner", open.Owner)
	if err := stream.Send(&pb.SessionResponse{Seq: first.Seq, Header: s.n.header(rev), Session: id}); err != nil {
		return err
	}
	// The reader ends with the stream, which returning from this handler
	// ends.
	reqs, ended := make(chan *pb.SessionRequest), make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				ended <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case req := <-reqs:
			if err := stream.Send(s.handleSessionRequest(ctx, id, req)); err != nil {
				return err
			}
		case err := <-ended:
			s.n.log.Debug("session stream ended", "session", id, "err", err)
			return nil
		case <-ctx.Done():
			// The reader may stop here without a word to ended: it held a
			// request when the client went away.
			s.n.log.Debug("session stream ended", "session", id, "err", ctx.Err())
			return nil
		case <-live.removed:
			removedByCluster = true
			s.n.log.Warn("session removed by the cluster; ending its stream so that its process registers again", "session", id, "owner", open.Owner)
			return fmt.Errorf("%w: session %s was removed by the cluster (agent %s was taken out of it while unreachable); open a new session and register again",
				apierr.ErrSessionRequired, id, s.n.cfg.Name)
		}
	}
}

func (s *registryServer) handleSessionRequest(ctx context.Context, id string, req *pb.SessionRequest) *pb.SessionResponse {
	resp := &pb.SessionResponse{Seq: req.Seq}
	var err error
	switch k := req.Kind.(type) {
	case *pb.SessionRequest_Register:
		var inst *pb.Instance
		var rev uint64
		inst, rev, err = s.n.register(ctx, k.Register.GetInstance(), id)
		resp.Instance, resp.Header = inst, s.n.header(rev)
	case *pb.SessionRequest_Deregister:
		var rev uint64
		rev, err = s.n.deregister(ctx, k.Deregister.Service, k.Deregister.Id)
		resp.Header = s.n.header(rev)
	case *pb.SessionRequest_Keepalive:
		resp.Header = s.n.header(s.n.store.FSM().Revision())
	case *pb.SessionRequest_Open:
		err = apierr.Invalid("session", "already open")
	default:
		err = apierr.Invalid("session", "empty request")
	}
	if err != nil {
		st, _ := status.FromError(apierr.ToStatus(err))
		resp.Error = &pb.ErrorDetail{Code: int32(st.Code()), Message: st.Message()}
	}
	return resp
}

// destroySessions removes sessions and their instances through Raft,
// retrying for a while: the agent may be between leaders.
func (n *Node) destroySessions(ids ...string) {
	if n.halting.Load() {
		return // a crashed agent says nothing; the cluster cleans up
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := &pb.Command{Kind: &pb.Command_SessionDestroy{SessionDestroy: &pb.SessionDestroy{Ids: ids}}}
	for {
		_, err := n.propose(ctx, cmd)
		if err == nil {
			n.log.Debug("sessions closed", "sessions", ids)
			return
		}
		if ctx.Err() != nil || errors.Is(err, apierr.ErrShuttingDown) {
			n.log.Warn("could not close sessions; they are closed when this agent restarts", "sessions", ids, "err", err)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// cleanupOrphanSessions removes, every few seconds, sessions this agent
// owns but does not serve: their streams died with an earlier process of
// this agent (crash, kill -9, restart). It also ends the streams of served
// sessions that the cluster removed.
func (n *Node) cleanupOrphanSessions(ctx context.Context) {
	t := time.NewTicker(orphanSessionScan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.endRemovedSessions()
		if n.store.CheckRead(pb.Consistency_DEFAULT) != nil {
			continue
		}
		var orphans []string
		for _, s := range n.store.FSM().Sessions() {
			if s.Node == n.cfg.Name && !n.sessions.has(s.Id) {
				orphans = append(orphans, s.Id)
			}
		}
		if len(orphans) > 0 {
			n.log.Info("closing sessions whose streams ended with an earlier run of this agent", "count", len(orphans))
			n.destroySessions(orphans...)
		}
	}
}

// endRemovedSessions ends the streams of served sessions that this replica
// no longer has although it applied their creation. A removal is a
// committed fact, so a replica that lags the leader may act on it.
func (n *Node) endRemovedSessions() {
	fsm := n.store.FSM()
	rev := fsm.Revision() // read first: a session created later is not judged
	exists := make(map[string]bool)
	for _, s := range fsm.Sessions() {
		exists[s.Id] = true
	}
	n.sessions.markRemoved(rev, exists)
}

// orphanSessionScan is how often cleanupOrphanSessions looks.
var orphanSessionScan = 500 * time.Millisecond
