package grpcapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// NewSessionID returns a new random id (128 bits, hex): a session's, or
// the tail of a request id the agent mints.
func NewSessionID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// defaultSessionOpenWait is how long a Session stream may go without its
// first message: a caller that opens streams and sends nothing would
// otherwise hold max_sessions slots for as long as its connection lives.
const defaultSessionOpenWait = 10 * time.Second

// recvOpen receives a Session stream's first message, failing with
// InvalidArgument when none arrives within cfg.SessionOpenWait. The
// receive left waiting then ends with the stream, as the handler returns.
func (s *Registry) recvOpen(stream pb.Registry_SessionServer) (*pb.SessionRequest, error) {
	type received struct {
		m   *pb.SessionRequest
		err error
	}
	got := make(chan received, 1)
	go func() {
		m, err := stream.Recv()
		got <- received{m, err}
	}()
	t := time.NewTimer(s.cfg.SessionOpenWait)
	defer t.Stop()
	select {
	case r := <-got:
		return r.m, r.err
	case <-t.C:
		return nil, apierr.Invalid("session", "no first message within %s of the stream's start; it must be open", s.cfg.SessionOpenWait)
	}
}

// Session serves one process's session: the registrations made on the
// stream live as long as the stream. When it ends, for any reason (clean
// close, crash, kill -9, network failure noticed by keepalive), the session
// and its instances are removed in one Raft entry. If the cluster removes
// the session first (the leader reaped this agent while it was
// unreachable), the stream ends with FailedPrecondition, so that the
// process opens a new session and registers again.
func (s *Registry) Session(stream pb.Registry_SessionServer) error {
	release, err := s.sessions.take()
	if err != nil {
		return err
	}
	defer release()
	// The stream ends when the agent begins to close, so that its process
	// registers again elsewhere or later at once, and the agent's shutdown
	// does not wait for it.
	ctx, _, done := s.streamContext(stream.Context())
	defer done()
	first, err := s.recvOpen(stream)
	if errors.Is(err, io.EOF) {
		return apierr.Invalid("session", "the stream ended before its first message, which must be open")
	}
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
	if open.RequireLeader {
		if _, err := s.leaderContact(); err != nil {
			return err
		}
	}
	id := NewSessionID()
	live := s.cfg.Health.ServeSession(id)
	defer live.End()
	rev, err := s.cfg.Cluster.Propose(ctx, &pb.Command{Kind: &pb.Command_SessionCreate{SessionCreate: &pb.SessionCreate{
		Session: &pb.Session{Id: id, Node: s.cfg.Agent, Owner: open.Owner, Created: time.Now().UnixNano()},
	}}})
	if err != nil {
		return err
	}
	live.Created(rev)
	removedByCluster := false
	defer func() {
		if !removedByCluster {
			s.cfg.Health.DestroySessions(id)
		}
	}()
	s.log.Debug("session opened", "session", id, "owner", open.Owner)
	if err := stream.Send(&pb.SessionResponse{Seq: first.Seq, Header: s.header(rev), Session: id}); err != nil {
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
	// An agent that loses contact with the leader tells the session at
	// once, in a response that answers no request (seq 0), not only in
	// the answer to its next keepalive: its owner may register elsewhere
	// seconds sooner.
	lost := s.contactLostCh()
	for {
		select {
		case req := <-reqs:
			if err := stream.Send(s.handleSessionRequest(ctx, id, req)); err != nil {
				return err
			}
			if lost == nil {
				lost = s.contactLostCh()
			}
		case <-lost:
			lost = nil // armed again at the next request once in contact
			resp := &pb.SessionResponse{Header: s.header(s.cfg.Replica.Revision())}
			if _, err := s.leaderContact(); err != nil {
				resp.CutOff = err.Error()
				s.log.Info("session told its agent is cut off from the leader", "session", id, "err", err)
				if err := stream.Send(resp); err != nil {
					return err
				}
			}
		case err := <-ended:
			s.log.Debug("session stream ended", "session", id, "err", err)
			return nil
		case <-ctx.Done():
			// The reader may stop here without a word to ended: it held a
			// request when the client went away.
			s.log.Debug("session stream ended", "session", id, "err", ctx.Err())
			if s.ctx.Err() != nil {
				return apierr.ErrShuttingDown
			}
			return nil
		case <-live.Removed():
			removedByCluster = true
			s.log.Warn("session removed by the cluster; ending its stream so that its process registers again", "session", id, "owner", open.Owner)
			return fmt.Errorf("%w: session %s was removed by the cluster (agent %s was taken out of it while unreachable); open a new session and register again",
				apierr.ErrSessionRequired, id, s.cfg.Agent)
		}
	}
}

// contactLostCh returns a channel that closes when this agent loses
// contact with the leader; nil (never ready) when it has lost it already.
func (s *Registry) contactLostCh() <-chan struct{} {
	contact, err := s.leaderContact()
	if err != nil {
		return nil
	}
	return contact.Done()
}

func (s *Registry) handleSessionRequest(ctx context.Context, id string, req *pb.SessionRequest) *pb.SessionResponse {
	resp := &pb.SessionResponse{Seq: req.Seq}
	var err error
	switch k := req.Kind.(type) {
	case *pb.SessionRequest_Register:
		var inst *pb.Instance
		var rev uint64
		inst, rev, err = s.register(ctx, k.Register.GetInstance(), id)
		resp.Instance, resp.Header = inst, s.header(rev)
	case *pb.SessionRequest_Deregister:
		var rev uint64
		rev, err = s.deregister(ctx, k.Deregister.Service, k.Deregister.Id)
		resp.Header = s.header(rev)
	case *pb.SessionRequest_Keepalive:
		resp.Header = s.header(s.cfg.Replica.Revision())
		if _, lost := s.leaderContact(); lost != nil {
			resp.CutOff = lost.Error()
		}
	case *pb.SessionRequest_Open:
		err = apierr.Invalid("session", "already open")
	default:
		err = apierr.Invalid("session", "empty request")
	}
	if err != nil {
		resp.Error = errorDetail(err)
	}
	return resp
}
