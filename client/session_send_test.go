package client

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
)

// unreadSessionAgent answers a Session stream's open and then reads
// nothing more (its session handler busy, or the process stopped with
// its connection open), so the stream's flow-control windows fill.
func unreadSessionAgent(t *testing.T) *clienttest.Agent {
	return (&clienttest.Agent{OnSession: func(stream zrpcpb.Registry_SessionServer) error {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		if err := stream.Send(&zrpcpb.SessionResponse{Seq: req.GetSeq(), Session: "s-1"}); err != nil {
			return err
		}
		<-stream.Context().Done()
		return nil
	}}).Start(t)
}

// fillSession starts registrations on s of more than an agent's windows
// take, so that the later sends wait for room; each one's error arrives
// on the channel returned.
func fillSession(ctx context.Context, s *Session) (n int, errc <-chan error) {
	n = 64
	big := &zrpcpb.Instance{Service: "user.rpc", Id: "user-1", Metadata: map[string]string{"k": strings.Repeat("x", 256<<10)}}
	c := make(chan error, n)
	for range n {
		go func() {
			_, err := s.Register(ctx, big)
			c <- err
		}()
	}
	return n, c
}

// TestSessionRequestHonoursContextWhileTheAgentReadsNothing: a Register
// whose send waits for an agent that reads nothing returns when its
// context ends, not when the stream does.
func TestSessionRequestHonoursContextWhileTheAgentReadsNothing(t *testing.T) {
	agent := unreadSessionAgent(t)
	c := newTestClient(t, agent.Addr)
	s, err := c.Session(testContext(t), "test pid 1", WithKeepAliveInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(testContext(t), 300*time.Millisecond)
	defer cancel()
	n, errc := fillSession(ctx, s)
	for range n {
		select {
		case err := <-errc:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Register = %v, want DeadlineExceeded", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Register still waits 10 s after its context ended: its send to an agent that reads nothing ignores the context")
		}
	}
}

// TestSessionEndsWhenItsAgentGoesSilentWithSendsWaiting: the keepalives'
// check of a silent agent goes on while registrations wait to be sent to
// it, so the session ends and its owner registers elsewhere.
func TestSessionEndsWhenItsAgentGoesSilentWithSendsWaiting(t *testing.T) {
	oldWait, oldProbe := sessionAnswerWait, probeTimeout
	t.Cleanup(func() { sessionAnswerWait, probeTimeout = oldWait, oldProbe })
	sessionAnswerWait, probeTimeout = 200*time.Millisecond, 200*time.Millisecond
	a := unreadSessionAgent(t)
	b := unreadSessionAgent(t)
	c := newTestClient(t, a.Addr, b.Addr)
	s, err := c.Session(testContext(t), "test pid 1", WithKeepAliveInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	a.Silent.Store(true)
	fillSession(testContext(t), s)
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the session on a silent agent is still open after 10 s while registrations wait to be sent")
	}
	if !errors.Is(s.Err(), errSessionSilent) {
		t.Fatalf("session ended with %v, want it to say its agent answered neither a keepalive nor a health check", s.Err())
	}
}
