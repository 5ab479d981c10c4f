package client

import (
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// quietFor sets watchQuiet and probeTimeout for the rest of t. Call it
// before making clients: their goroutines, which read both, are gone by
// the time it restores them (cleanups run last first).
func quietFor(t *testing.T, quiet, timeout time.Duration) {
	q, to := watchQuiet, probeTimeout
	watchQuiet, probeTimeout = quiet, timeout
	t.Cleanup(func() { watchQuiet, probeTimeout = q, to })
}

// watchOnTheFirstOfTwo starts two fake agents and a watch of user.rpc
// through a client of both, served by the first up to revision 7. The
// watch is closed when t ends.
func watchOnTheFirstOfTwo(t *testing.T) (first, next *manyAgent, w *WatchStream, s *manyStream, create *zrpcpb.WatchCreate) {
	t.Helper()
	first, next = startManyAgent(t, false), startManyAgent(t, false)
	c := newTestClient(t, first.Addr, next.Addr)
	w, err := c.Watch(testContext(t), "user.rpc", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	s = first.stream(t, 1)
	create = s.waitCreate(t, "user.rpc", 0)
	s.respond(t, create.WatchId, watchEvent("user.rpc", 7, true))
	mustRecv(t, w, "user.rpc", 7)
	return first, next, w, s, create
}

// TestWatchMovesOnFromAnAgentThatStopsAnswering: the agent serving a
// watch stops answering while its connection stays open and answers
// pings, so neither the stream nor gRPC's keepalive fails for 15 s; the
// stream, quiet, health-checks the agent, gets no answer, and the watch
// resumes on the next endpoint from its last revision.
func TestWatchMovesOnFromAnAgentThatStopsAnswering(t *testing.T) {
	quietFor(t, 200*time.Millisecond, 200*time.Millisecond)
	first, next, w, _, _ := watchOnTheFirstOfTwo(t)

	first.Silent.Store(true) // its stream sends nothing more, its health checks go unanswered
	got := recvAsync(w)
	ns := next.stream(t, 1)
	resumed := ns.waitCreate(t, "user.rpc", 7)
	ns.respond(t, resumed.WatchId, watchEvent("user.rpc", 8, false))
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("Recv after the first agent went silent: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not move to the next agent")
	}
}

// TestWatchStaysOnAQuietAgentThatAnswersHealthChecks: a stream with
// nothing to deliver for many quiet intervals, on an agent that answers
// its health checks, is not left.
func TestWatchStaysOnAQuietAgentThatAnswersHealthChecks(t *testing.T) {
	quietFor(t, 50*time.Millisecond, probeTimeout)
	first, next, w, s, create := watchOnTheFirstOfTwo(t)

	got := recvAsync(w)
	time.Sleep(20 * watchQuiet)
	if first.HealthChecks() == 0 {
		t.Fatal("the quiet stream's agent was never health-checked")
	}
	s.respond(t, create.WatchId, watchEvent("user.rpc", 8, false))
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no response from the quiet agent")
	}
	if streams, calls, _ := next.counts(); streams != 0 || calls != 0 {
		t.Fatalf("the watch opened %d streams on the next agent, want none", streams)
	}
}
