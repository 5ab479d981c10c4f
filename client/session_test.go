package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
)

// sessionAgent is a fake Session stream handler. It answers open with
// session "s-1", collects `batch` register/deregister requests and then
// answers them in reverse order, so that only seq matching pairs them right.
type sessionAgent struct {
	batch      int
	keepalives atomic.Int64
	ended      atomic.Bool // the agent saw the stream end
	// end, when closed, makes the agent end the stream with Unavailable.
	end chan struct{}
}

func (a *sessionAgent) serve(stream zrpcpb.Registry_SessionServer) error {
	defer a.ended.Store(true)
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	if req.GetOpen() == nil {
		return status.Error(codes.FailedPrecondition, "session not open")
	}
	if err := stream.Send(&zrpcpb.SessionResponse{Seq: req.GetSeq(), Session: "s-1"}); err != nil {
		return err
	}
	reqs := make(chan *zrpcpb.SessionRequest)
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			if req.GetKeepalive() != nil {
				a.keepalives.Add(1)
				continue
			}
			select {
			case reqs <- req:
			case <-stream.Context().Done():
				return
			}
		}
	}()
	var held []*zrpcpb.SessionRequest
	for {
		select {
		case req := <-reqs:
			held = append(held, req)
			if len(held) < a.batch {
				continue
			}
			slices.Reverse(held)
			for _, r := range held {
				if err := stream.Send(answer(r)); err != nil {
					return err
				}
			}
			held = nil
		case err := <-errc:
			return err
		case <-a.end:
			return status.Error(codes.Unavailable, "agent shutting down")
		}
	}
}

// answer echoes a register (instance with node "fake"), or fails on id "bad".
func answer(r *zrpcpb.SessionRequest) *zrpcpb.SessionResponse {
	id := r.GetRegister().GetInstance().GetId() + r.GetDeregister().GetId()
	if id == "bad" {
		return &zrpcpb.SessionResponse{Seq: r.GetSeq(), Error: &zrpcpb.ErrorDetail{
			Code: int32(codes.NotFound), Message: "not found: instance bad",
		}}
	}
	inst := &zrpcpb.Instance{Id: id, Service: "user.rpc", Node: "fake", Session: "s-1"}
	return &zrpcpb.SessionResponse{Seq: r.GetSeq(), Instance: inst}
}

func openTestSession(t *testing.T, a *sessionAgent, opts ...SessionOption) (*Session, *clienttest.Agent) {
	t.Helper()
	if a.end == nil {
		a.end = make(chan struct{})
	}
	agent := (&clienttest.Agent{OnSession: a.serve}).Start(t)
	c := newTestClient(t, agent.Addr)
	s, err := c.Session(testContext(t), "test pid 1", opts...)
	if err != nil {
		t.Fatalf("Session: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if s.ID() != "s-1" {
		t.Fatalf("ID = %q, want s-1", s.ID())
	}
	return s, agent
}

func TestSessionMatchesConcurrentRequests(t *testing.T) {
	const n = 32
	s, _ := openTestSession(t, &sessionAgent{batch: n}, WithKeepAliveInterval(0))
	ctx := testContext(t)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("user-%d", i)
			if i == n-1 {
				id = "bad"
				errs[i] = s.Deregister(ctx, "user.rpc", id)
				return
			}
			got, err := s.Register(ctx, &zrpcpb.Instance{Service: "user.rpc", Id: id})
			if err == nil && got.GetId() != id {
				err = fmt.Errorf("Register(%s) answered with %s", id, got.GetId())
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs[:n-1] {
		if err != nil {
			t.Errorf("request %d: %v", i, err)
		}
	}
	bad := errs[n-1]
	if !errors.Is(bad, apierr.ErrNotFound) || bad.Error() != "not found: instance bad" {
		t.Errorf("Deregister(bad) = %v, want ErrNotFound with the agent's message", bad)
	}
}

func TestSessionKeepAlive(t *testing.T) {
	a := &sessionAgent{batch: 1}
	openTestSession(t, a, WithKeepAliveInterval(10*time.Millisecond))
	waitFor(t, "two keepalives", func() bool { return a.keepalives.Load() >= 2 })
}

func TestSessionEnds(t *testing.T) {
	tests := []struct {
		name    string
		end     func(a *sessionAgent, s *Session)
		wantErr func(error) bool
	}{
		{"closed by the client", func(_ *sessionAgent, s *Session) { s.Close() },
			func(err error) bool { return errors.Is(err, ErrClosed) }},
		{"ended by the agent", func(a *sessionAgent, _ *Session) { close(a.end) },
			func(err error) bool { return status.Code(err) == codes.Unavailable }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &sessionAgent{batch: 1}
			s, _ := openTestSession(t, a)
			if err := s.Err(); err != nil {
				t.Fatalf("Err on an open session = %v", err)
			}
			tt.end(a, s)
			select {
			case <-s.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("Done not closed")
			}
			if err := s.Err(); !tt.wantErr(err) {
				t.Fatalf("Err = %v", err)
			}
			waitFor(t, "the agent to see the stream end", a.ended.Load)
			if _, err := s.Register(testContext(t), &zrpcpb.Instance{Id: "late"}); err == nil {
				t.Fatal("Register on an ended session succeeded")
			}
			for range 2 {
				if err := s.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
			}
		})
	}
}

func TestSessionOpenRefused(t *testing.T) {
	agent := (&clienttest.Agent{OnSession: func(stream zrpcpb.Registry_SessionServer) error {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		return stream.Send(&zrpcpb.SessionResponse{Seq: req.GetSeq(), Error: &zrpcpb.ErrorDetail{
			Code: int32(codes.InvalidArgument), Message: "invalid argument: owner: empty",
		}})
	}}).Start(t)
	c := newTestClient(t, agent.Addr)
	_, err := c.Session(testContext(t), "")
	if !errors.Is(err, apierr.ErrInvalidArgument) {
		t.Fatalf("Session = %v, want ErrInvalidArgument", err)
	}
}

func TestSessionRequestHonoursContext(t *testing.T) {
	s, _ := openTestSession(t, &sessionAgent{batch: 2}, WithKeepAliveInterval(0))
	ctx, cancel := context.WithTimeout(testContext(t), 50*time.Millisecond)
	defer cancel()
	// batch 2: the agent holds the only request, so only ctx can end the call.
	_, err := s.Register(ctx, &zrpcpb.Instance{Service: "user.rpc", Id: "user-1"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Register = %v, want DeadlineExceeded", err)
	}
}
