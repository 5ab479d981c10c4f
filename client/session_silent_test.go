package client

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
)

// keepaliveAgent is a Session handler that answers open and every
// keepalive, until mute is set: then it reads and answers nothing, as a
// stopped agent whose connection stays open (or one whose answers wait
// behind a slow request).
type keepaliveAgent struct{ mute atomic.Bool }

func (a *keepaliveAgent) serve(stream zrpcpb.Registry_SessionServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		if a.mute.Load() {
			continue
		}
		resp := &zrpcpb.SessionResponse{Seq: req.GetSeq()}
		if req.GetOpen() != nil {
			resp.Session = "s-1"
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// silentSessionTest opens a session with keepalives every 100 ms on the
// first of two fake agents, whose answers then stop (and, with silent,
// its health checks too).
func silentSessionTest(t *testing.T, silent bool) (*Client, *Session) {
	t.Helper()
	oldWait, oldProbe := sessionAnswerWait, probeTimeout
	t.Cleanup(func() { sessionAnswerWait, probeTimeout = oldWait, oldProbe })
	sessionAnswerWait, probeTimeout = 200*time.Millisecond, 200*time.Millisecond
	var first keepaliveAgent
	a := (&clienttest.Agent{OnSession: first.serve}).Start(t)
	b := (&clienttest.Agent{OnSession: new(keepaliveAgent).serve}).Start(t)
	c := newTestClient(t, a.Addr, b.Addr)
	s, err := c.Session(testContext(t), "test pid 1", WithKeepAliveInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.addr != a.Addr {
		t.Fatalf("session opened on %s, want the first agent %s", s.addr, a.Addr)
	}
	first.mute.Store(true)
	a.Silent.Store(silent)
	return c, s
}

// TestSessionEndsWhenItsAgentGoesSilent: a session whose agent stops
// answering (stopped, or cut off by a network that drops its packets)
// while the stream stays open ends once a keepalive and then a health
// check went unanswered, saying so, so that its owner registers again
// through another agent instead of waiting for the connection's
// keepalive (15 s) while the cluster shows its instances critical.
func TestSessionEndsWhenItsAgentGoesSilent(t *testing.T) {
	c, s := silentSessionTest(t, true)
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the session on a silent agent is still open after 10 s")
	}
	if !errors.Is(s.Err(), errSessionSilent) {
		t.Fatalf("session ended with %v, want it to say its agent answered neither a keepalive nor a health check", s.Err())
	}
	// The next session starts at the other agent, not at the silent one.
	if cur := c.cur.Load(); cur != 1 {
		t.Errorf("the client's current endpoint is %d after its session's agent went silent, want 1, the other", cur)
	}
	next, err := c.Session(testContext(t), "test pid 1")
	if err != nil || next.addr == s.addr {
		t.Fatalf("the next session: %v, on %v; want one on the other agent", err, next)
	}
	next.Close()
}

// TestSessionWaitsForAnAgentThatAnswersHealthChecks: keepalives whose
// answers are late (the agent answers a session's requests in order, and
// one may wait for an election) do not end the session while the agent
// answers health checks.
func TestSessionWaitsForAnAgentThatAnswersHealthChecks(t *testing.T) {
	_, s := silentSessionTest(t, false)
	select {
	case <-s.Done():
		t.Fatalf("the session ended although its agent answers health checks: %v", s.Err())
	case <-time.After(1500 * time.Millisecond): // 7 answer waits and probes
	}
}
