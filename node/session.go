package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// liveSessions are the sessions whose streams this agent is serving now.
type liveSessions struct {
	mu  sync.Mutex
	ids map[string]bool
}

func newLiveSessions() *liveSessions { return &liveSessions{ids: make(map[string]bool)} }

func (l *liveSessions) add(id string)    { l.mu.Lock(); l.ids[id] = true; l.mu.Unlock() }
func (l *liveSessions) remove(id string) { l.mu.Lock(); delete(l.ids, id); l.mu.Unlock() }
func (l *liveSessions) has(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ids[id]
}

func newSessionID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Session serves one process's session: the registrations made on the
// stream live as long as the stream. When it ends, for any reason (clean
// close, crash, kill -9, network failure noticed by keepalive), the session
// and its instances are removed in one Raft entry.
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
	s.n.sessions.add(id)
	defer s.n.sessions.remove(id)
	rev, err := s.n.propose(ctx, &pb.Command{Kind: &pb.Command_SessionCreate{SessionCreate: &pb.SessionCreate{
		Session: &pb.Session{Id: id, Node: s.n.cfg.Name, Owner: open.Owner, Created: time.Now().UnixNano()},
	}}})
	if err != nil {
		return err
	}
	defer s.n.destroySessions(id)
	s.n.log.Debug("session opened", "session", id, "owner", open.Owner)
	if err := stream.Send(&pb.SessionResponse{Seq: first.Seq, Header: s.n.header(rev), Session: id}); err != nil {
		return err
	}
	for {
		req, err := stream.Recv()
		if err != nil {
			s.n.log.Debug("session stream ended", "session", id, "err", err)
			return nil
		}
		if err := stream.Send(s.handleSessionRequest(ctx, id, req)); err != nil {
			return err
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
// this agent (crash, kill -9, restart).
func (n *Node) cleanupOrphanSessions(ctx context.Context) {
	t := time.NewTicker(orphanSessionScan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
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

// orphanSessionScan is how often cleanupOrphanSessions looks.
var orphanSessionScan = 500 * time.Millisecond
