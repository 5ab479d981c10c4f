package client

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// progressFor sets watchProgress for the rest of t (see quietFor).
func progressFor(t *testing.T, every time.Duration) {
	p := watchProgress
	watchProgress = every
	t.Cleanup(func() { watchProgress = p })
}

// progressOf is a progress notification of an agent that agreed to send
// one every ms milliseconds, at revision rev.
func progressOf(ms uint32, rev uint64) *zrpcpb.WatchManyResponse {
	return &zrpcpb.WatchManyResponse{ProgressNotifyMs: ms,
		Response: &zrpcpb.WatchResponse{Header: &zrpcpb.ResponseHeader{Revision: rev}}}
}

// asked returns the interval of progress notifications the stream's
// requests asked for, 0 when none did.
func (s *manyStream) asked() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.progressAsked
}

// TestWatchMovesOnFromAnAgentWhoseWatchesSendNothing: the agent serving
// a watch agreed to send progress notifications, sent a few, and then
// sends nothing more on the stream (its watches stuck) while it answers
// health checks. The stream is left once it missed several notifications,
// and the watch resumes on the next endpoint from its last revision and
// gets the event registered there. No progress notification reaches the
// caller.
func TestWatchMovesOnFromAnAgentWhoseWatchesSendNothing(t *testing.T) {
	quietFor(t, 200*time.Millisecond, time.Second)
	progressFor(t, 100*time.Millisecond)
	first, next, w, s, _ := watchOnTheFirstOfTwo(t)
	if got := s.asked(); got != 100 {
		t.Fatalf("the stream asked for progress every %d ms, want 100", got)
	}
	for range 3 {
		s.send(t, progressOf(100, 7))
	}

	type recvd struct {
		resp *zrpcpb.WatchResponse
		err  error
	}
	got := make(chan recvd, 1)
	go func() {
		resp, err := w.Recv()
		got <- recvd{resp, err}
	}()
	ns := next.stream(t, 1)
	resumed := ns.waitCreate(t, "user.rpc", 7)
	ns.respond(t, resumed.WatchId, watchEvent("user.rpc", 8, false))
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("Recv after the first agent's watches stuck: %v", r.err)
		}
		if rev, n := r.resp.GetHeader().GetRevision(), len(r.resp.GetEvents()); rev != 8 || n != 1 {
			t.Fatalf("Recv = revision %d with %d events, want the event at revision 8 from the next agent", rev, n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not move to the next agent")
	}
	if first.HealthChecks() == 0 {
		t.Fatal("the first agent was left without a health check")
	}
	waitFor(t, "the first agent's stream ended", s.ended)
}

// TestWatchStaysOnAnAgentThatSendsProgress: a stream whose agent sends
// progress notifications and no events, for many times the intervals a
// stream may miss, is not left, and the notifications do not reach the
// caller: its next response is the agent's next event.
func TestWatchStaysOnAnAgentThatSendsProgress(t *testing.T) {
	quietFor(t, 200*time.Millisecond, time.Second)
	progressFor(t, 100*time.Millisecond)
	_, next, w, s, create := watchOnTheFirstOfTwo(t)

	var sent atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { // the agent's progress, more often than agreed
		defer close(done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			s.sendMu.Lock()
			err := s.srv.Send(progressOf(100, 7))
			s.sendMu.Unlock()
			if err != nil {
				return
			}
			sent.Add(1)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { stop(); <-done })

	waitFor(t, "100 progress notifications sent", func() bool { return sent.Load() >= 100 })
	s.respond(t, create.WatchId, watchEvent("user.rpc", 8, false))
	resp := mustRecv(t, w, "user.rpc", 8)
	if len(resp.GetEvents()) != 1 {
		t.Fatalf("Recv = %d events, want the event at revision 8", len(resp.GetEvents()))
	}
	if streams, calls, _ := next.counts(); streams != 0 || calls != 0 {
		t.Fatalf("the watch opened %d streams on the next agent, want none", streams)
	}
}

// TestWatchStaysOnAQuietAgentThatSendsNoProgress: an agent that never
// agreed to send progress (one from before progress notifications)
// is kept while it answers health checks, however short the interval the
// client asks for; and a client with one endpoint asks for no progress.
func TestWatchStaysOnAQuietAgentThatSendsNoProgress(t *testing.T) {
	quietFor(t, 50*time.Millisecond, probeTimeout)
	progressFor(t, 10*time.Millisecond)
	first, next, w, s, create := watchOnTheFirstOfTwo(t)
	got := recvAsync(w)
	waitFor(t, "health checks of the quiet agent", func() bool { return first.HealthChecks() >= 5 })
	s.respond(t, create.WatchId, watchEvent("user.rpc", 8, false))
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if streams, calls, _ := next.counts(); streams != 0 || calls != 0 {
		t.Fatalf("the watch opened %d streams on the next agent, want none", streams)
	}

	alone := startManyAgent(t, false)
	c := newTestClient(t, alone.Addr)
	w1, err := c.Watch(testContext(t), "user.rpc", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w1.Close() })
	as := alone.stream(t, 1)
	as.waitCreate(t, "user.rpc", 0)
	if got := as.asked(); got != 0 {
		t.Fatalf("a client of one endpoint asked for progress every %d ms, want none", got)
	}
}

// TestWatchLeavesAStuckAgentAgainWhenItReturnsToIt: the watch left an
// agent whose watches stuck; when the next agent's stream breaks and the
// watch returns to the stuck agent, whose new stream sends nothing, not
// even the agreement to send progress, the watch leaves it again instead
// of staying on it for good.
func TestWatchLeavesAStuckAgentAgainWhenItReturnsToIt(t *testing.T) {
	quietFor(t, 200*time.Millisecond, time.Second)
	progressFor(t, 100*time.Millisecond)
	first, next, w, s, _ := watchOnTheFirstOfTwo(t)
	s.send(t, progressOf(100, 7)) // the agreement; then the agent's watches stick

	got := recvAsync(w)
	ns := next.stream(t, 1)
	ns.respond(t, ns.waitCreate(t, "user.rpc", 7).WatchId, watchEvent("user.rpc", 8, false))
	if err := <-got; err != nil {
		t.Fatalf("Recv after the first agent's watches stuck: %v", err)
	}
	ns.end(status.Error(codes.Unavailable, "agent restarting"))

	got = recvAsync(w)
	back := first.stream(t, 2)
	back.waitCreate(t, "user.rpc", 8) // and nothing more from the stuck agent
	ns2 := next.stream(t, 2)
	ns2.respond(t, ns2.waitCreate(t, "user.rpc", 8).WatchId, watchEvent("user.rpc", 9, false))
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("Recv after returning to the stuck agent: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch stayed on the stuck agent")
	}
	if rev := w.Revision(); rev != 9 {
		t.Fatalf("revision %d, want 9 from the next agent", rev)
	}
}
