package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/fsmtest"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/raftstore"
)

// manyStream is the client's side of a WatchMany stream in a test: its
// responses are read by a goroutine into got, by watch id.
type manyStream struct {
	t      *testing.T
	stream pb.Registry_WatchManyClient
	in     chan *pb.WatchManyResponse
	ended  chan error // the stream's end
	stop   context.CancelFunc
}

func openMany(t *testing.T, addr string) *manyStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := pb.NewRegistryClient(dialTest(t, addr)).WatchMany(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := &manyStream{t: t, stream: s, in: make(chan *pb.WatchManyResponse, 1024), ended: make(chan error, 1), stop: cancel}
	go func() {
		for {
			r, err := s.Recv()
			if err != nil {
				m.ended <- err
				return
			}
			m.in <- r
		}
	}()
	return m
}

func (m *manyStream) create(id uint64, service string, from uint64) {
	m.t.Helper()
	err := m.stream.Send(&pb.WatchManyRequest{Kind: &pb.WatchManyRequest_Create{Create: &pb.WatchCreate{
		WatchId: id, Watch: &pb.WatchRequest{Service: service, FromRevision: from}}}})
	if err != nil {
		m.t.Fatal(err)
	}
}

func (m *manyStream) cancel(id uint64) {
	m.t.Helper()
	if err := m.stream.Send(&pb.WatchManyRequest{Kind: &pb.WatchManyRequest_Cancel{Cancel: &pb.WatchCancel{WatchId: id}}}); err != nil {
		m.t.Fatal(err)
	}
}

// next returns the next response, failing the test after 10 s or when the
// stream ends.
func (m *manyStream) next() *pb.WatchManyResponse {
	m.t.Helper()
	select {
	case r := <-m.in:
		return r
	case err := <-m.ended:
		m.t.Fatalf("the stream ended: %v", err)
	case <-time.After(10 * time.Second):
		m.t.Fatal("no response in 10 s")
	}
	return nil
}

// end returns the stream's end, failing the test after 10 s.
func (m *manyStream) end() error {
	m.t.Helper()
	for {
		select {
		case err := <-m.ended:
			return err
		case <-m.in:
		case <-time.After(10 * time.Second):
			m.t.Fatal("the stream did not end in 10 s")
			return nil
		}
	}
}

// describe is a response as "id:snapshot[svc/id,...]" or "id:events[...]"
// or "id:ended CODE".
func describe(r *pb.WatchManyResponse) string {
	if r.Ended != nil {
		return fmt.Sprintf("%d:ended %s", r.WatchId, codes.Code(r.Ended.Code))
	}
	kind := "events"
	if r.Response.Snapshot {
		kind = "snapshot"
	}
	var evs []string
	for _, ev := range r.Response.Events {
		evs = append(evs, ev.GetInstance().GetService()+"/"+ev.GetInstance().GetId())
	}
	return fmt.Sprintf("%d:%s[%s]", r.WatchId, kind, strings.Join(evs, ","))
}

func startMany(t *testing.T, cfg RegistryConfig) (*fsmtest.Writer, *Registry, string) {
	fsm := raftstore.NewFSM(1 << 12)
	cfg.Agent, cfg.Replica = "a1", fsm
	if cfg.Metrics == nil {
		cfg.Metrics = &watchMetrics{}
	}
	reg := NewRegistry(context.Background(), cfg)
	return fsmtest.NewWriter(t, fsm), reg, serveTest(t, Services{Registry: reg})
}

func inst(service, id string) *pb.Instance {
	return &pb.Instance{Service: service, Id: id, Address: "127.0.0.1:9000"}
}

// Watches of two services on one stream: each gets its own snapshot and
// then only its service's events, under its id; a cancelled watch gets
// nothing more while the other goes on; a watch resumed from a revision
// gets what followed it.
func TestWatchManyCarriesEachWatchUnderItsID(t *testing.T) {
	w, reg, addr := startMany(t, RegistryConfig{})
	w.Register(inst("a.rpc", "a1"))
	w.Register(inst("b.rpc", "b1"))
	m := openMany(t, addr)
	m.create(10, "a.rpc", 0)
	if got := describe(m.next()); got != "10:snapshot[a.rpc/a1]" {
		t.Fatalf("first response %s, want watch 10's snapshot of a.rpc", got)
	}
	m.create(20, "b.rpc", 0)
	if got := describe(m.next()); got != "20:snapshot[b.rpc/b1]" {
		t.Fatalf("response %s, want watch 20's snapshot of b.rpc", got)
	}
	w.Register(inst("b.rpc", "b2"))
	w.Register(inst("a.rpc", "a2"))
	got := []string{describe(m.next()), describe(m.next())}
	if slices.Sort(got); strings.Join(got, " ") != "10:events[a.rpc/a2] 20:events[b.rpc/b2]" {
		t.Fatalf("events %v, want b2 on watch 20 then a2 on watch 10", got)
	}
	resumeFrom := w.Index()
	m.cancel(10)
	testwait.For(t, 10*time.Second, "watch 10 cancelled", func() bool { return reg.Streams().Watches == 2 })
	w.Register(inst("a.rpc", "a3"))
	w.Register(inst("b.rpc", "b3"))
	if got := describe(m.next()); got != "20:events[b.rpc/b3]" {
		t.Fatalf("after cancelling watch 10: %s, want only watch 20's b3", got)
	}
	// The id of a cancelled watch may be used again; this one resumes.
	m.create(10, "a.rpc", resumeFrom)
	if got := describe(m.next()); got != "10:events[a.rpc/a3]" {
		t.Fatalf("watch 10 resumed from %d: %s, want a3", resumeFrom, got)
	}
}

// A watch the agent refuses ends alone, with the reason named; the stream
// and its other watches go on. A request that breaks the protocol ends
// the stream with InvalidArgument.
func TestWatchManyRefusesABadWatchAloneAndEndsABrokenStream(t *testing.T) {
	w, _, addr := startMany(t, RegistryConfig{})
	w.Register(inst("ok.rpc", "i1"))
	m := openMany(t, addr)
	m.create(1, "bad name with spaces", 0)
	r := m.next()
	if r.WatchId != 1 || codes.Code(r.GetEnded().GetCode()) != codes.InvalidArgument || !strings.Contains(r.Ended.Message, "watch.service") {
		t.Fatalf("watch of an invalid name: %v, want its end InvalidArgument naming watch.service", r)
	}
	m.create(2, "ok.rpc", 0)
	if got := describe(m.next()); got != "2:snapshot[ok.rpc/i1]" {
		t.Fatalf("the next watch: %s, want its snapshot", got)
	}

	for name, bad := range map[string]func(*manyStream){
		"id 0":         func(s *manyStream) { s.create(0, "ok.rpc", 0) },
		"an id in use": func(s *manyStream) { s.create(5, "ok.rpc", 0); s.next(); s.create(5, "ok.rpc", 0) },
		"an empty request": func(s *manyStream) {
			if err := s.stream.Send(&pb.WatchManyRequest{}); err != nil {
				t.Fatal(err)
			}
		},
	} {
		s := openMany(t, addr)
		bad(s)
		if err := s.end(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: the stream ended with %v, want InvalidArgument", name, err)
		}
	}
}

// Each watch takes a max_watches slot, and the stream one: past the limit
// a watch is refused alone (ResourceExhausted naming the flag); a
// cancelled watch gives its slot back, and so does every watch of a
// stream that ends.
func TestWatchManyWatchesTakeSlotsAndGiveThemBack(t *testing.T) {
	w, reg, addr := startMany(t, RegistryConfig{MaxWatches: 3})
	w.Register(inst("a.rpc", "i1"))
	m := openMany(t, addr)
	m.create(1, "a.rpc", 0)
	m.create(2, "a.rpc", 0)
	m.create(3, "a.rpc", 0)
	var got []string
	for range 3 {
		got = append(got, describe(m.next()))
	}
	slices.Sort(got) // watches are answered in no set order
	want := "1:snapshot[a.rpc/i1] 2:snapshot[a.rpc/i1] 3:ended ResourceExhausted"
	if strings.Join(got, " ") != want {
		t.Fatalf("three watches on a stream with max_watches 3: %v, want %s", got, want)
	}
	if n := reg.Streams().Watches; n != 3 {
		t.Fatalf("%d slots held, want 3 (the stream and two watches)", n)
	}
	m.cancel(1)
	testwait.For(t, 10*time.Second, "the cancelled watch's slot given back", func() bool { return reg.Streams().Watches == 2 })
	m.create(4, "a.rpc", 0)
	if got := describe(m.next()); got != "4:snapshot[a.rpc/i1]" {
		t.Fatalf("a watch after a cancel: %s, want its snapshot", got)
	}
	if err := m.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	w.Register(inst("a.rpc", "i2"))
	got = []string{describe(m.next()), describe(m.next())}
	if slices.Sort(got); strings.Join(got, " ") != "2:events[a.rpc/i2] 4:events[a.rpc/i2]" {
		t.Fatalf("after the client stopped sending: %v, want both watches' event", got)
	}
	m2 := openMany(t, addr)
	if err := m2.end(); status.Code(err) != codes.ResourceExhausted || !errors.Is(apierr.FromStatus(err), apierr.ErrQuotaExceeded) {
		t.Fatalf("a second stream past max_watches: %v, want ResourceExhausted", err)
	}
	m.stop() // the client goes away
	testwait.For(t, 10*time.Second, "the ended stream's slots given back", func() bool { return reg.Streams().Watches == 0 })
}

// A stream whose reader stopped reading holds the one response it is
// sending, charged to the agent's budget for watch streams (its watches'
// events wait in the registry's ring, not on the stream); when another
// stream needs the room, the stalled one (holding the most) is ended
// Aborted "watch too slow", its watches' slots are given back, and the
// other stream goes on. The budget here is smaller than one event.
func TestWatchManyStalledStreamEndedByTheAgentsBudget(t *testing.T) {
	metrics := &watchMetrics{}
	w, reg, addr := startMany(t, RegistryConfig{WatchQueueBytes: 2 << 10, Metrics: metrics})
	big := func(id string) *pb.Instance {
		in := inst("x.rpc", id)
		in.Metadata = map[string]string{"blob": strings.Repeat("x", 4000)}
		return in
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stalled, err := pb.NewRegistryClient(dialTest(t, addr)).WatchMany(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stalled.Send(&pb.WatchManyRequest{Kind: &pb.WatchManyRequest_Create{Create: &pb.WatchCreate{WatchId: 1, Watch: &pb.WatchRequest{Service: "x.rpc"}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stalled.Recv(); err != nil { // the empty snapshot; then it reads no more
		t.Fatal(err)
	}
	other := openMany(t, addr)
	other.create(1, "y.rpc", 0)
	other.next()

	// Events pile up behind the stalled reader until its sender holds a
	// response it cannot send; each write to y.rpc then needs room.
	ended := make(chan error, 1)
	gate := make(chan struct{})
	go func() {
		<-gate // stalled until the test has seen the stream ended
		for {
			if _, err := stalled.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	// Big events to x.rpc until the stalled stream's sender is held by
	// its reader, holding a response charged; then an event to y.rpc
	// needs room, which the stalled stream gives.
	for i := 0; reg.budget.total.Load() < 4000; i++ {
		if i == 1000 {
			t.Fatal("the stalled stream's send never blocked")
		}
		for j := range 20 {
			w.Register(big(fmt.Sprintf("%d-%d", i, j)))
		}
		time.Sleep(10 * time.Millisecond) // the sender takes the events
	}
	w.Register(inst("y.rpc", "during"))
	if got := describe(other.next()); got != "1:events[y.rpc/during]" {
		t.Fatalf("the other stream: %s, want its event", got)
	}
	testwait.For(t, 10*time.Second, "the stalled stream ended too slow", func() bool { return metrics.slow() == 1 })
	testwait.For(t, 10*time.Second, "the stalled stream's slots given back", func() bool { return reg.Streams().Watches == 2 })
	close(gate) // the reader takes what was sent, then the end
	select {
	case err = <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the stalled stream's reader saw no end")
	}
	if status.Code(err) != codes.Aborted || !errors.Is(apierr.FromStatus(err), apierr.ErrWatchTooSlow) {
		t.Fatalf("the stalled stream ended with %v, want Aborted watch too slow", err)
	}
	w.Register(inst("y.rpc", "after"))
	if got := describe(other.next()); got != "1:events[y.rpc/after]" {
		t.Fatalf("the other stream after: %s", got)
	}
}

// The ready queue gives its watches back in order and keeps no more room
// than its watches need, whether it empties now and then or never does.
func TestWatchManyReadyQueueStaysWithinItsWatches(t *testing.T) {
	m := &watchMux{wake: make(chan struct{}, 1)}
	watches := make([]*muxWatch, 100)
	for i := range watches {
		watches[i] = &muxWatch{m: m, id: uint64(i)}
		watches[i].wakeUp()
	}
	for round := range 10000 { // always 99 or 100 queued, never empty
		mw := m.popReady()
		if want := uint64(round % 100); mw.id != want {
			t.Fatalf("round %d: popped watch %d, want %d", round, mw.id, want)
		}
		mw.wakeUp()
		if cap(m.ready) > 400 {
			t.Fatalf("round %d: the queue of 100 watches holds room for %d", round, cap(m.ready))
		}
	}
	for range 100 {
		m.popReady()
	}
	if mw := m.popReady(); mw != nil || m.head != 0 || len(m.ready) != 0 {
		t.Fatalf("emptied queue: popped %v, head %d, len %d", mw, m.head, len(m.ready))
	}
}
