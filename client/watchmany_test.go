package client

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
)

// manyAgent is a fake agent serving WatchMany as the test drives it: it
// records every stream with the creates and cancels it received, and the
// test sends each watch's responses (manyStream.send) and ends streams
// (manyStream.end). Its Watch, for the fallback, records each request,
// sends one response at the request's revision + 1 and waits.
type manyAgent struct {
	*clienttest.Agent
	mu         sync.Mutex
	streams    []*manyStream
	watchMany  int // WatchMany calls, refused ones included
	watchCalls []*zrpcpb.WatchRequest
}

// manyStream is one WatchMany stream the fake serves.
type manyStream struct {
	srv    zrpcpb.Registry_WatchManyServer
	sendMu sync.Mutex
	ending chan error    // the handler returns the error sent here
	done   chan struct{} // closed when the handler has returned

	mu      sync.Mutex
	creates []*zrpcpb.WatchCreate
	cancels []uint64
	// progressAsked is the last interval of progress notifications a
	// request asked for (WatchManyRequest.progress_notify_ms).
	progressAsked uint32
}

// startManyAgent starts a fake agent; unimplemented makes it one that
// predates WatchMany.
func startManyAgent(t *testing.T, unimplemented bool) *manyAgent {
	a := &manyAgent{Agent: &clienttest.Agent{}}
	a.OnWatchMany = func(srv zrpcpb.Registry_WatchManyServer) error {
		a.mu.Lock()
		a.watchMany++
		a.mu.Unlock()
		if unimplemented {
			return status.Error(codes.Unimplemented, "method WatchMany not implemented")
		}
		return a.serveMany(srv)
	}
	a.OnWatch = func(req *zrpcpb.WatchRequest, srv zrpcpb.Registry_WatchServer) error {
		a.mu.Lock()
		a.watchCalls = append(a.watchCalls, req)
		a.mu.Unlock()
		if err := srv.Send(watchEvent(req.GetService(), req.GetFromRevision()+1, false)); err != nil {
			return err
		}
		<-srv.Context().Done()
		return nil
	}
	a.Start(t)
	return a
}

func (a *manyAgent) serveMany(srv zrpcpb.Registry_WatchManyServer) error {
	s := &manyStream{srv: srv, ending: make(chan error, 1), done: make(chan struct{})}
	defer close(s.done)
	a.mu.Lock()
	a.streams = append(a.streams, s)
	a.mu.Unlock()
	received := make(chan error, 1)
	go func() { received <- s.receive() }()
	select {
	case err := <-s.ending:
		return err
	case err := <-received:
		return err
	}
}

// receive records the client's requests until the stream ends.
func (s *manyStream) receive() error {
	for {
		req, err := s.srv.Recv()
		if err != nil {
			return err
		}
		s.mu.Lock()
		if ms := req.GetProgressNotifyMs(); ms != 0 {
			s.progressAsked = ms
		}
		if c := req.GetCreate(); c != nil {
			s.creates = append(s.creates, c)
		} else {
			s.cancels = append(s.cancels, req.GetCancel().GetWatchId())
		}
		s.mu.Unlock()
	}
}

// stream waits for the agent's n-th WatchMany stream (from 1) and returns it.
func (a *manyAgent) stream(t *testing.T, n int) *manyStream {
	t.Helper()
	var s *manyStream
	waitFor(t, fmt.Sprintf("WatchMany stream %d", n), func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		if len(a.streams) >= n {
			s = a.streams[n-1]
		}
		return s != nil
	})
	return s
}

func (a *manyAgent) counts() (streams, watchManyCalls int, watches []*zrpcpb.WatchRequest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.streams), a.watchMany, append([]*zrpcpb.WatchRequest(nil), a.watchCalls...)
}

// waitCreate waits for a create of a watch of service from revision from,
// and returns it.
func (s *manyStream) waitCreate(t *testing.T, service string, from uint64) *zrpcpb.WatchCreate {
	t.Helper()
	var found *zrpcpb.WatchCreate
	waitFor(t, fmt.Sprintf("a create of %s from revision %d", service, from), func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range s.creates {
			if c.GetWatch().GetService() == service && c.GetWatch().GetFromRevision() == from {
				found = c
			}
		}
		return found != nil
	})
	return found
}

func (s *manyStream) cancelled(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.cancels {
		if c == id {
			return true
		}
	}
	return false
}

func (s *manyStream) send(t *testing.T, resp *zrpcpb.WatchManyResponse) {
	t.Helper()
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if err := s.srv.Send(resp); err != nil {
		t.Fatalf("send to watch %d: %v", resp.GetWatchId(), err)
	}
}

// respond sends resp as a response of watch id.
func (s *manyStream) respond(t *testing.T, id uint64, resp *zrpcpb.WatchResponse) {
	t.Helper()
	s.send(t, &zrpcpb.WatchManyResponse{WatchId: id, Response: resp})
}

// end ends the stream with err.
func (s *manyStream) end(err error) { s.ending <- err }

func (s *manyStream) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// endedBy is the end of a watch for err, as an agent sends it.
func endedBy(err error) *zrpcpb.ErrorDetail {
	st := status.Convert(apierr.ToStatus(err))
	return &zrpcpb.ErrorDetail{Code: int32(st.Code()), Message: st.Message(), Reason: apierr.Code(err)}
}

// mustRecv returns w's next response, which must be at revision rev and
// of service.
func mustRecv(t *testing.T, w *WatchStream, service string, rev uint64) *zrpcpb.WatchResponse {
	t.Helper()
	resp, err := w.Recv()
	if err != nil {
		t.Fatalf("Recv of the %s watch: %v", service, err)
	}
	if got := resp.GetHeader().GetRevision(); got != rev {
		t.Fatalf("%s watch got revision %d, want %d", service, got, rev)
	}
	for _, ev := range resp.GetEvents() {
		if ev.GetInstance().GetService() != service {
			t.Fatalf("%s watch got an event of %s", service, ev.GetInstance().GetService())
		}
	}
	return resp
}

// recvAsync calls w.Recv on another goroutine; the channel gets its
// result, at the latest when the watch's ctx (testContext) ends.
func recvAsync(w *WatchStream) <-chan error {
	errc := make(chan error, 1)
	go func() {
		_, err := w.Recv()
		errc <- err
	}()
	return errc
}

func watchAll(t *testing.T, c *Client, ctx context.Context, services ...string) []*WatchStream {
	t.Helper()
	var ws []*WatchStream
	for _, svc := range services {
		w, err := c.Watch(ctx, svc, 0)
		if err != nil {
			t.Fatalf("Watch %s: %v", svc, err)
		}
		t.Cleanup(func() { w.Close() })
		ws = append(ws, w)
	}
	return ws
}

// TestWatchManySharesOneStream: the watches of a Client on one endpoint
// ride one WatchMany stream, each created with an id of its own, and each
// gets the responses of its id.
func TestWatchManySharesOneStream(t *testing.T) {
	agent := startManyAgent(t, false)
	c := newTestClient(t, agent.Addr)
	services := []string{"a.rpc", "b.rpc", "c.rpc"}
	ws := watchAll(t, c, testContext(t), services...)

	s := agent.stream(t, 1)
	ids := map[uint64]bool{}
	for i := len(services) - 1; i >= 0; i-- { // answered out of order
		cr := s.waitCreate(t, services[i], 0)
		ids[cr.GetWatchId()] = true
		s.respond(t, cr.GetWatchId(), watchEvent(services[i], uint64(10+i), true))
	}
	if len(ids) != len(services) {
		t.Fatalf("creates used %d distinct ids for %d watches", len(ids), len(services))
	}
	for i, svc := range services {
		if resp := mustRecv(t, ws[i], svc, uint64(10+i)); !resp.GetSnapshot() {
			t.Fatalf("%s watch: first response is not the snapshot", svc)
		}
	}
	s.respond(t, s.waitCreate(t, "b.rpc", 0).GetWatchId(), watchEvent("b.rpc", 20, false))
	mustRecv(t, ws[1], "b.rpc", 20)

	if streams, _, watches := agent.counts(); streams != 1 || len(watches) != 0 {
		t.Fatalf("agent served %d WatchMany streams and %d Watch streams, want 1 and 0", streams, len(watches))
	}
}

// TestWatchManyAssemblesParts: each watch assembles its own parts, which
// the agent interleaves with other watches' responses; parts cut off by a
// broken stream are dropped and the watch resumes before their response.
func TestWatchManyAssemblesParts(t *testing.T) {
	part := func(rev uint64, id string, more bool) *zrpcpb.WatchResponse {
		return &zrpcpb.WatchResponse{
			Header: &zrpcpb.ResponseHeader{Revision: rev}, Snapshot: id == "a", More: more,
			Events: []*zrpcpb.Event{{Type: zrpcpb.Event_PUT, Revision: rev, Instance: &zrpcpb.Instance{Service: "user.rpc", Id: id}}},
		}
	}
	agent := startManyAgent(t, false)
	c := newTestClient(t, agent.Addr)
	ws := watchAll(t, c, testContext(t), "user.rpc", "other.rpc")
	s := agent.stream(t, 1)
	user, other := s.waitCreate(t, "user.rpc", 0).GetWatchId(), s.waitCreate(t, "other.rpc", 0).GetWatchId()

	s.respond(t, user, part(5, "a", true))
	s.respond(t, other, watchEvent("other.rpc", 7, true))
	s.respond(t, user, part(5, "b", true))
	s.respond(t, user, part(5, "c", false))
	s.respond(t, user, part(8, "d", true)) // cut off by the stream's end
	mustRecv(t, ws[1], "other.rpc", 7)
	got := mustRecv(t, ws[0], "user.rpc", 5)
	var ids []string
	for _, ev := range got.GetEvents() {
		ids = append(ids, ev.GetInstance().GetId())
	}
	if got.GetMore() || !got.GetSnapshot() || strings.Join(ids, ",") != "a,b,c" {
		t.Fatalf("Recv = more %v, snapshot %v, ids %v; want the whole snapshot a,b,c", got.GetMore(), got.GetSnapshot(), ids)
	}

	s.end(status.Error(codes.Unavailable, "stream killed"))
	errc := recvAsync(ws[0])
	next := agent.stream(t, 2)
	next.respond(t, next.waitCreate(t, "user.rpc", 5).GetWatchId(), watchEvent("user.rpc", 9, false))
	if err := <-errc; err != nil {
		t.Fatalf("Recv after the stream broke: %v", err)
	}
	if rev := ws[0].Revision(); rev != 9 {
		t.Fatalf("revision after resuming = %d, want 9: the cut-off parts dropped", rev)
	}
}

// TestWatchManyWatchEnds: the agent ends one watch of the stream. What it
// queued before the end is delivered first; an end the watch cannot get
// past is returned from its Recv, a resumable one reopens it on the same
// stream from the last revision delivered; the other watch goes on.
func TestWatchManyWatchEnds(t *testing.T) {
	tests := []struct {
		name string
		err  error // the agent's
		want error // from Recv; nil: resumed
	}{
		{"permission denied", fmt.Errorf("%w: token may not read a.rpc", apierr.ErrPermissionDenied), apierr.ErrPermissionDenied},
		{"invalid service", apierr.Invalid("watch.service", "bad name"), apierr.ErrInvalidArgument},
		{"max_watches reached", fmt.Errorf("%w: max_watches", apierr.ErrQuotaExceeded), apierr.ErrQuotaExceeded},
		{"too slow", fmt.Errorf("%w: resume from the last revision", apierr.ErrWatchTooSlow), nil},
		{"agent shutting down", apierr.ErrShuttingDown, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := startManyAgent(t, false)
			c := newTestClient(t, agent.Addr)
			ws := watchAll(t, c, testContext(t), "a.rpc", "b.rpc")
			s := agent.stream(t, 1)
			a, b := s.waitCreate(t, "a.rpc", 0).GetWatchId(), s.waitCreate(t, "b.rpc", 0).GetWatchId()
			s.respond(t, a, watchEvent("a.rpc", 5, true))
			s.respond(t, b, watchEvent("b.rpc", 5, true))
			s.respond(t, a, watchEvent("a.rpc", 6, false))
			s.send(t, &zrpcpb.WatchManyResponse{WatchId: a, Ended: endedBy(tt.err)})
			s.respond(t, b, watchEvent("b.rpc", 7, false))

			mustRecv(t, ws[1], "b.rpc", 5)
			mustRecv(t, ws[1], "b.rpc", 7)
			mustRecv(t, ws[0], "a.rpc", 5)
			mustRecv(t, ws[0], "a.rpc", 6)
			if tt.want != nil {
				if _, err := ws[0].Recv(); !errors.Is(err, tt.want) {
					t.Fatalf("Recv after the end = %v, want %v", err, tt.want)
				}
				return
			}
			errc := recvAsync(ws[0])
			again := s.waitCreate(t, "a.rpc", 6)
			if again.GetWatchId() == a {
				t.Fatalf("the watch was created again with its old id %d", a)
			}
			s.respond(t, again.GetWatchId(), watchEvent("a.rpc", 9, false))
			if err := <-errc; err != nil {
				t.Fatalf("Recv after the end: %v", err)
			}
			if rev := ws[0].Revision(); rev != 9 {
				t.Fatalf("revision after resuming = %d, want 9", rev)
			}
			if streams, _, _ := agent.counts(); streams != 1 {
				t.Fatalf("agent served %d WatchMany streams, want the watch resumed on the one", streams)
			}
		})
	}
}

// TestWatchManyStreamEnds: when the whole stream ends, every watch on it
// resumes from the last revision it delivered: on the next endpoint when
// the agent went away, on the same one when the stream read too slowly.
func TestWatchManyStreamEnds(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		resumeOn int // 0: the first agent, 1: the second
	}{
		{"agent gone", status.Error(codes.Unavailable, "agent stopped"), 1},
		{"stream too slow", apierr.ToStatus(fmt.Errorf("%w: stream too slow", apierr.ErrWatchTooSlow)), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agents := []*manyAgent{startManyAgent(t, false), startManyAgent(t, false)}
			c := newTestClient(t, agents[0].Addr, agents[1].Addr)
			ws := watchAll(t, c, testContext(t), "x.rpc", "y.rpc")
			s := agents[0].stream(t, 1)
			x, y := s.waitCreate(t, "x.rpc", 0).GetWatchId(), s.waitCreate(t, "y.rpc", 0).GetWatchId()
			s.respond(t, x, watchEvent("x.rpc", 3, true))
			s.respond(t, y, watchEvent("y.rpc", 4, true))
			s.respond(t, y, watchEvent("y.rpc", 8, false))
			mustRecv(t, ws[0], "x.rpc", 3)
			mustRecv(t, ws[1], "y.rpc", 4)
			mustRecv(t, ws[1], "y.rpc", 8)
			s.end(tt.err)

			n := 1
			if tt.resumeOn == 0 {
				n = 2
			}
			errs := []<-chan error{recvAsync(ws[0]), recvAsync(ws[1])}
			next := agents[tt.resumeOn].stream(t, n)
			next.respond(t, next.waitCreate(t, "x.rpc", 3).GetWatchId(), watchEvent("x.rpc", 10, false))
			next.respond(t, next.waitCreate(t, "y.rpc", 8).GetWatchId(), watchEvent("y.rpc", 11, false))
			for i, errc := range errs {
				if err := <-errc; err != nil {
					t.Fatalf("watch %d: Recv after the stream ended: %v", i, err)
				}
			}
			if ws[0].Revision() != 10 || ws[1].Revision() != 11 {
				t.Fatalf("revisions after resuming = %d and %d, want 10 and 11", ws[0].Revision(), ws[1].Revision())
			}
			if streams, _, _ := agents[tt.resumeOn].counts(); streams != n {
				t.Fatalf("agent %d served %d WatchMany streams, want %d: both watches on one", tt.resumeOn, streams, n)
			}
		})
	}
}

// TestWatchManyFallsBackToWatch: an agent that answers WatchMany with
// Unimplemented gets a Watch stream per watch, at once (no reconnect
// backoff), and the client goes straight to Watch on it afterwards.
func TestWatchManyFallsBackToWatch(t *testing.T) {
	agent := startManyAgent(t, true)
	c := newTestClient(t, agent.Addr)
	ctx := testContext(t)
	first, err := c.Watch(ctx, "a.rpc", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	mustRecv(t, first, "a.rpc", 1)
	if first.backoffs != 0 {
		t.Fatalf("the first watch waited %d reconnect backoffs before its Watch stream, want none: the agent's answer is no failure", first.backoffs)
	}
	second, err := c.Watch(ctx, "b.rpc", 4)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	mustRecv(t, second, "b.rpc", 5)

	_, calls, watches := agent.counts()
	if calls != 1 {
		t.Fatalf("WatchMany called %d times, want once: the endpoint remembers the answer", calls)
	}
	if len(watches) != 2 || watches[0].GetService() != "a.rpc" || watches[1].GetFromRevision() != 4 {
		t.Fatalf("Watch calls = %v, want a.rpc from 0 and b.rpc from 4", watches)
	}
}

// TestWatchManyCloseCancels: Close and the end of a watch's ctx cancel it
// on the stream; when the last watch leaves, the stream ends, the next
// watch opens another, and Client.Close ends that one.
func TestWatchManyCloseCancels(t *testing.T) {
	agent := startManyAgent(t, false)
	c := newTestClient(t, agent.Addr)
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	ws := watchAll(t, c, testContext(t), "a.rpc", "c.rpc")
	byCtx, err := c.Watch(ctx, "b.rpc", 0)
	if err != nil {
		t.Fatal(err)
	}
	s := agent.stream(t, 1)
	a, b := s.waitCreate(t, "a.rpc", 0).GetWatchId(), s.waitCreate(t, "b.rpc", 0).GetWatchId()

	ws[0].Close()
	waitFor(t, "the cancel of the closed watch", func() bool { return s.cancelled(a) })
	cancel()
	waitFor(t, "the cancel of the watch whose ctx ended", func() bool { return s.cancelled(b) })
	if s.ended() {
		t.Fatal("the stream ended while a watch was still on it")
	}
	if _, err := ws[0].Recv(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv after Close = %v, want ErrClosed", err)
	}
	if _, err := byCtx.Recv(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Recv after the ctx ended = %v, want context.Canceled", err)
	}
	ws[1].Close()
	waitFor(t, "the stream to end with its last watch", s.ended)

	w := watchAll(t, c, testContext(t), "d.rpc")[0]
	next := agent.stream(t, 2)
	next.respond(t, next.waitCreate(t, "d.rpc", 0).GetWatchId(), watchEvent("d.rpc", 3, true))
	mustRecv(t, w, "d.rpc", 3)
	c.Close()
	waitFor(t, "the stream to end with the client", next.ended)
}

// TestWatchManySlowCallerOverflows: a watch whose caller does not read
// fills its bounded queue, by count or by bytes, without holding up the
// other watch of the stream; it is cancelled, and its next Recv creates it
// again from the last revision it delivered, what was queued dropped.
func TestWatchManySlowCallerOverflows(t *testing.T) {
	big := strings.Repeat("x", watchQueueBytes/2)
	tests := []struct {
		name string
		sent int                              // responses to the slow watch
		grow func(resp *zrpcpb.WatchResponse) // makes them larger
	}{
		{"count", watchQueueLen + 20, func(*zrpcpb.WatchResponse) {}},
		{"bytes", 3, func(resp *zrpcpb.WatchResponse) { resp.Events[0].Instance.Metadata = map[string]string{"big": big} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := startManyAgent(t, false)
			c := newTestClient(t, agent.Addr)
			ws := watchAll(t, c, testContext(t), "slow.rpc", "fast.rpc")
			slow, fast := ws[0], ws[1]
			s := agent.stream(t, 1)
			slowID, fastID := s.waitCreate(t, "slow.rpc", 0).GetWatchId(), s.waitCreate(t, "fast.rpc", 0).GetWatchId()
			s.respond(t, slowID, watchEvent("slow.rpc", 1, true))
			s.respond(t, fastID, watchEvent("fast.rpc", 1, true))
			mustRecv(t, slow, "slow.rpc", 1)
			mustRecv(t, fast, "fast.rpc", 1)

			for rev := uint64(2); rev < 2+uint64(tt.sent); rev++ {
				resp := watchEvent("slow.rpc", rev, false)
				tt.grow(resp)
				s.respond(t, slowID, resp)
			}
			s.respond(t, fastID, watchEvent("fast.rpc", 200, false))
			mustRecv(t, fast, "fast.rpc", 200)
			waitFor(t, "the cancel of the watch whose queue overflowed", func() bool { return s.cancelled(slowID) })

			errc := recvAsync(slow)
			again := s.waitCreate(t, "slow.rpc", 1)
			if again.GetWatchId() == slowID {
				t.Fatalf("the watch was created again with its old id %d", slowID)
			}
			s.respond(t, again.GetWatchId(), watchEvent("slow.rpc", 300, false))
			if err := <-errc; err != nil {
				t.Fatalf("Recv after the overflow: %v", err)
			}
			if rev := slow.Revision(); rev != 300 {
				t.Fatalf("revision after the overflow = %d, want 300: the queued responses dropped", rev)
			}
		})
	}
}

// TestWatchManyEndWithoutErrorEndsTheWatch: an end of a watch that
// carries no error code (a fault of the agent, which sends nothing more
// for the watch) still ends it: Recv returns an error saying so rather
// than wait for responses that never come.
func TestWatchManyEndWithoutErrorEndsTheWatch(t *testing.T) {
	agent := startManyAgent(t, false)
	c := newTestClient(t, agent.Addr)
	ctx, cancel := context.WithTimeout(testContext(t), 10*time.Second)
	defer cancel()
	w := watchAll(t, c, ctx, "a.rpc")[0]
	s := agent.stream(t, 1)
	id := s.waitCreate(t, "a.rpc", 0).GetWatchId()
	s.respond(t, id, watchEvent("a.rpc", 5, true))
	mustRecv(t, w, "a.rpc", 5)

	s.send(t, &zrpcpb.WatchManyResponse{WatchId: id, Ended: &zrpcpb.ErrorDetail{Message: "bye"}})
	_, err := w.Recv()
	if status.Code(err) != codes.Unknown || !strings.Contains(err.Error(), "no error code") || !strings.Contains(err.Error(), agent.Addr) {
		t.Fatalf("Recv after an end without an error code = %v, want Unknown naming the agent and saying the end had no error code", err)
	}
}

// TestWatchManyOverflowDeliversNoGap: a watch's queue overflows while its
// caller, slower than the agent, is taking responses from it. What the
// caller is given before the watch ends is the responses in order with
// none skipped, so that resuming from the last revision delivered loses
// nothing.
func TestWatchManyOverflowDeliversNoGap(t *testing.T) {
	for round := range 200 {
		s := &muxStream{m: &watchMux{addr: "agent"}, watches: map[uint64]*muxWatch{}}
		w := &muxWatch{s: s, id: 1, ctx: t.Context(),
			queue: make(chan queuedResponse, watchQueueLen), ended: make(chan struct{})}
		s.watches[w.id] = w
		respond := func(rev uint64) {
			s.dispatch(&zrpcpb.WatchManyResponse{WatchId: w.id, Response: watchEvent("a.rpc", rev, false)})
		}
		reading, taken := make(chan struct{}), make(chan []uint64)
		go func() {
			var revs []uint64
			for {
				resp, err := w.recv()
				if err != nil {
					taken <- revs
					return
				}
				if revs = append(revs, resp.GetHeader().GetRevision()); len(revs) == 1 {
					close(reading)
				}
				runtime.Gosched() // a caller slower than the agent
			}
		}()
		respond(1)
		<-reading
		ended := func() bool {
			select {
			case <-w.ended:
				return true
			default:
				return false
			}
		}
		for rev := uint64(2); !ended(); rev++ {
			if rev > 1<<20 {
				t.Fatalf("round %d: the queue of the caller never overflowed in %d responses", round, rev)
			}
			respond(rev)
		}
		revs := <-taken
		for i, rev := range revs {
			if rev != uint64(i+1) {
				t.Fatalf("round %d: the caller was given revisions %v: revision %d skipped", round, revs, i+1)
			}
		}
	}
}
