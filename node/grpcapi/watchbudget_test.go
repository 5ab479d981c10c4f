package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/fsmtest"
	"github.com/zrpcio/zrpc/internal/teststack"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/raftstore"
)

// watchMetrics counts what Registry reports of its watch streams.
type watchMetrics struct {
	mu      sync.Mutex
	tooSlow int
}

func (m *watchMetrics) ObserveRPC(string, codes.Code, time.Time) {}
func (m *watchMetrics) ObservePanic(string)                      {}
func (m *watchMetrics) WatchStarted()                            {}
func (m *watchMetrics) WatchEnded()                              {}
func (m *watchMetrics) StreamRefused(string)                     {}
func (m *watchMetrics) slow() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tooSlow
}

func (m *watchMetrics) WatchTooSlow() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tooSlow++
}

// stalledStream is a Watch stream whose reader takes the first `reads`
// messages and then stops reading: Send blocks until the stream ends.
type stalledStream struct {
	grpc.ServerStream
	ctx   context.Context
	reads int

	mu   sync.Mutex
	got  []*pb.WatchResponse
	more chan struct{} // closed when reads grows
	sent chan struct{} // receives a token per message taken
}

func newStalledStream(ctx context.Context, reads int) *stalledStream {
	return &stalledStream{ctx: ctx, reads: reads, more: make(chan struct{}), sent: make(chan struct{}, 1<<16)}
}

func (s *stalledStream) Context() context.Context { return s.ctx }

func (s *stalledStream) Send(resp *pb.WatchResponse) error {
	s.mu.Lock()
	for len(s.got) >= s.reads {
		more := s.more
		s.mu.Unlock()
		select {
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-more:
		}
		s.mu.Lock()
	}
	s.got = append(s.got, resp)
	s.mu.Unlock()
	s.sent <- struct{}{}
	return nil
}

// setReads lets the reader take up to n messages in all.
func (s *stalledStream) setReads(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads = n
	close(s.more)
	s.more = make(chan struct{})
}

func (s *stalledStream) received() []*pb.WatchResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*pb.WatchResponse(nil), s.got...)
}

type watchResult struct {
	stream *stalledStream
	err    error
}

// startWatch serves a Watch of req on reg to a stalled stream on its own
// goroutine; the stream ends (as gRPC ends it) when the handler returns.
func startWatch(t *testing.T, reg *Registry, req *pb.WatchRequest, reads int, done chan<- watchResult) *stalledStream {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := newStalledStream(ctx, reads)
	go func() {
		err := reg.Watch(req, s)
		cancel()
		done <- watchResult{s, err}
	}()
	return s
}

// TestWatchBudgetEndsTheLargestQueues: 20 watch streams that stop reading
// while writes go on would hold about 440 KB together, each about 22 KB,
// with the agent's budget for all watch queues at 64 KiB: streams with the
// most queued are ended too slow (with the revision to resume from) until
// the rest fit, the total queued stays within the budget plus one
// response, the writes never wait, and every byte is given back once the
// streams end.
func TestWatchBudgetEndsTheLargestQueues(t *testing.T) {
	const (
		watchers = 20
		budget   = 64 << 10
		writes   = 20
	)
	fsm := raftstore.NewFSM(1 << 12)
	w := fsmtest.NewWriter(t, fsm)
	metrics := &watchMetrics{}
	ctx, stop := context.WithCancel(context.Background())
	reg := NewRegistry(ctx, RegistryConfig{
		Agent: "a1", Replica: fsm, Metrics: metrics, WatchQueueBytes: budget,
		WatchBacklog: WatchLimits{Events: 1 << 20, Bytes: 1 << 30}, // only the budget ends streams
	})
	done := make(chan watchResult, watchers)
	for range watchers {
		s := startWatch(t, reg, &pb.WatchRequest{Service: "slow.rpc"}, 1, done)
		<-s.sent // the (empty) snapshot; then the reader stops
	}

	pad := map[string]string{"pad": strings.Repeat("x", 1000)}
	var over, perWatcher int64
	for i := range writes {
		w.Register(&pb.Instance{Service: "slow.rpc", Id: fmt.Sprintf("i%d", i), Address: "127.0.0.1:9000", Metadata: pad})
		inst := fsm.Instance("slow.rpc", fmt.Sprintf("i%d", i))
		perWatcher += int64(proto.Size(&pb.Event{Type: pb.Event_PUT, Instance: inst, Revision: inst.ModRevision}))
		if q := reg.WatchQueuedBytes(); q > over {
			over = q
		}
	}
	// Every watcher is either ended or holds every write.
	var ended []watchResult
	testwait.For(t, 30*time.Second, "every watcher ended or holding every write", func() bool {
		for {
			select {
			case r := <-done:
				ended = append(ended, r)
				continue
			default:
			}
			q := reg.WatchQueuedBytes()
			over = max(over, q)
			return q == int64(watchers-len(ended))*perWatcher
		}
	})
	if limit := budget + reg.budget.largestCharge.Load(); over > limit {
		t.Errorf("watch queues held %d bytes together, want at most the budget %d plus one response (%d)", over, budget, limit)
	}
	for _, r := range ended {
		st := status.Convert(r.err)
		if st.Code() != codes.Aborted || !errors.Is(apierr.FromStatus(r.err), apierr.ErrWatchTooSlow) ||
			!strings.Contains(st.Message(), "watch_queue_bytes") {
			t.Fatalf("a watcher ended with %v, want Aborted watch too slow naming watch_queue_bytes", r.err)
		}
		var resume *pb.WatchResume
		for _, d := range st.Details() {
			if r, ok := d.(*pb.WatchResume); ok {
				resume = r
			}
		}
		if resume == nil || resume.Revision != 0 {
			t.Errorf("ended watcher's resume detail = %v, want revision 0 (only the empty snapshot was sent)", resume)
		}
	}
	if kept, fit := watchers-len(ended), budget/int(perWatcher); kept < 1 || kept > fit {
		t.Errorf("%d watchers kept, want 1 to the %d whose %d bytes each fit in the budget", kept, fit, perWatcher)
	}
	metrics.mu.Lock()
	if metrics.tooSlow != len(ended) {
		t.Errorf("metrics counted %d watchers too slow, %d were ended", metrics.tooSlow, len(ended))
	}
	metrics.mu.Unlock()
	t.Logf("%d of %d watchers ended; at most %d bytes queued", len(ended), watchers, over)

	stop() // the agent closes: every stream ends and gives its bytes back
	for range watchers - len(ended) {
		<-done
	}
	if q := reg.WatchQueuedBytes(); q != 0 {
		t.Errorf("%d bytes still counted as queued after every stream ended", q)
	}
}

// TestWatchOfEverythingSendsItsSnapshotPageByPage: a watch of every
// service on 100,000 instances whose reader takes only the first message
// holds at most two snapshot pages queued (the one being sent and the next),
// not the snapshot; once the reader reads on, the parts assemble into the
// registry at the snapshot's revision.
func TestWatchOfEverythingSendsItsSnapshotPageByPage(t *testing.T) {
	fsm := raftstore.NewFSM(1 << 12)
	w := fsmtest.NewWriter(t, fsm)
	for s := range 100 {
		var insts []*pb.Instance
		for i := range 1000 {
			insts = append(insts, &pb.Instance{Service: fmt.Sprintf("svc%03d", s), Id: fmt.Sprintf("%04d", i), Address: "127.0.0.1:9000"})
		}
		w.Register(insts...)
	}
	want, rev := fsm.AllInstances()
	reg := NewRegistry(context.Background(), RegistryConfig{Agent: "a1", Replica: fsm, Metrics: &watchMetrics{}})
	done := make(chan watchResult, 1)
	s := startWatch(t, reg, &pb.WatchRequest{}, 1, done)
	<-s.sent
	first := s.received()[0]
	if !first.Snapshot || !first.More || first.Header.GetRevision() != rev {
		t.Fatalf("first message: snapshot %v, more %v at revision %d; want the first part of a snapshot at %d",
			first.Snapshot, first.More, first.Header.GetRevision(), rev)
	}
	// The reader stalls on the second message: the handler prepares at
	// most the page after it.
	pageBytes := int64(0)
	for _, e := range first.Events {
		pageBytes += int64(proto.Size(e))
	}
	testwait.For(t, 10*time.Second, "the handler waiting for the reader", func() bool { return stackHas("(*stalledStream).Send(") })
	if q := reg.WatchQueuedBytes(); q > 2*pageBytes {
		t.Fatalf("%d bytes queued behind a stalled reader, want at most two pages (%d bytes)", q, 2*pageBytes)
	}

	s.setReads(1 << 20)
	var got []*pb.Event
	parts := 0
	for _, resp := range s.received() {
		got = append(got, resp.Events...)
		parts++
	}
	for more := true; more; {
		testwait.For(t, 30*time.Second, "the next part", func() bool { return len(s.received()) > parts })
		resp := s.received()[parts]
		parts++
		if resp.Snapshot || resp.Header.GetRevision() != rev {
			t.Fatalf("part %d: snapshot %v at revision %d, want a continuation at %d", parts, resp.Snapshot, resp.Header.GetRevision(), rev)
		}
		got = append(got, resp.Events...)
		more = resp.More
	}
	if len(got) != len(want) {
		t.Fatalf("snapshot parts hold %d instances, the registry %d", len(got), len(want))
	}
	for i, e := range got {
		// As a client decodes it: pages carry instances encoded.
		b, err := proto.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		e = &pb.Event{}
		if err := proto.Unmarshal(b, e); err != nil {
			t.Fatal(err)
		}
		if e.Type != pb.Event_PUT || !proto.Equal(e.Instance, want[i]) || e.Revision != want[i].ModRevision {
			t.Fatalf("snapshot event %d = %v, want PUT %s/%s", i, e, want[i].Service, want[i].Id)
		}
	}
	t.Logf("%d instances in %d parts", len(got), parts)
}

// stackHas reports whether some goroutine's stack has fn.
func stackHas(fn string) bool { return len(teststack.Goroutines("", fn)) > 0 }

// TestWatchBudgetSnapshotPagesWaitForRoom: a snapshot whose first page
// does not fit in what the budget has left waits for room instead of
// ending the stream that holds it; once that stream's reader reads, the
// snapshot goes out and no stream was ended. A page that has waited its
// patience ends the stream with the most queued, as events do.
func TestWatchBudgetSnapshotPagesWaitForRoom(t *testing.T) {
	for _, tc := range []struct {
		name      string
		patience  time.Duration
		holderEnd bool // the stream holding the budget is ended
	}{
		{"reader reads on", time.Hour, false},
		{"reader never reads", 10 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const budget = 256 << 10
			fsm := raftstore.NewFSM(1 << 12)
			w := fsmtest.NewWriter(t, fsm)
			var big []*pb.Instance
			for i := range 3000 {
				big = append(big, &pb.Instance{Service: "big.rpc", Id: fmt.Sprintf("%04d", i), Address: "127.0.0.1:9000",
					Metadata: map[string]string{"pad": strings.Repeat("x", 100)}})
			}
			w.Register(big...)
			reg := NewRegistry(context.Background(), RegistryConfig{Agent: "a1", Replica: fsm, Metrics: &watchMetrics{}, WatchQueueBytes: budget})
			reg.budget.patience = tc.patience

			holderDone := make(chan watchResult, 1)
			holder := startWatch(t, reg, &pb.WatchRequest{Service: "small.rpc"}, 1, holderDone)
			<-holder.sent
			pad := map[string]string{"pad": strings.Repeat("x", 8<<10)}
			for i := range 20 {
				w.Register(&pb.Instance{Service: "small.rpc", Id: fmt.Sprint(i), Address: "127.0.0.1:9000", Metadata: pad})
			}
			testwait.For(t, 10*time.Second, "the holder's queue filled", func() bool { return reg.WatchQueuedBytes() > 160<<10 })

			pagerDone := make(chan watchResult, 1)
			pager := startWatch(t, reg, &pb.WatchRequest{Service: "big.rpc"}, 1<<20, pagerDone)
			if !tc.holderEnd {
				testwait.For(t, 10*time.Second, "the first page waiting for room", func() bool { return stackHas("(*watchBudget).chargeWait(") })
				if n := len(pager.received()); n != 0 {
					t.Fatalf("%d messages sent while the budget had no room", n)
				}
				holder.setReads(1 << 20)
			}
			testwait.For(t, 30*time.Second, "the snapshot sent whole", func() bool {
				got := pager.received()
				return len(got) > 0 && !got[len(got)-1].More
			})
			n := 0
			for _, resp := range pager.received() {
				n += len(resp.Events)
			}
			if n != len(big) {
				t.Errorf("snapshot of %d instances, want %d", n, len(big))
			}
			if tc.holderEnd {
				select {
				case r := <-holderDone:
					if !errors.Is(apierr.FromStatus(r.err), apierr.ErrWatchTooSlow) {
						t.Fatalf("the stream holding the budget ended with %v, want too slow", r.err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("the stream holding the budget was not ended once the page had waited its patience")
				}
			} else {
				select {
				case r := <-holderDone:
					t.Fatalf("the stream holding the budget ended: %v", r.err)
				default:
				}
			}
			select {
			case r := <-pagerDone:
				t.Fatalf("the snapshot's stream ended: %v", r.err)
			default:
			}
		})
	}
}

// TestWatchStreamKeepsItsBacklogChargedAcrossSends: the backlog measured
// behind a send stays charged when the send ends (its events still wait
// in the registry), and counts as charged for the response that takes
// them, so other streams never get room this one is about to take back.
func TestWatchStreamKeepsItsBacklogChargedAcrossSends(t *testing.T) {
	b := newWatchBudget(1000)
	ws := newWatchStream(WatchLimits{}.withDefaults(), 0)
	b.join(ws, func() {})
	if !b.charge(ws, 100) || !b.charge(ws, 300) { // the response sent, the backlog behind it
		t.Fatal("charges within the budget refused")
	}
	ws.measured(3, 300)
	ws.sentWhole(5)
	if got := b.total.Load(); got != 300 {
		t.Fatalf("%d bytes charged after the send, want the backlog's 300", got)
	}
	if rest := ws.takeCarried(350, false); rest != 50 {
		t.Fatalf("a 350-byte response after a 300-byte backlog charges %d more, want 50", rest)
	}
	if !b.charge(ws, 50) || b.total.Load() != 350 {
		t.Fatalf("%d bytes charged for the response, want 350", b.total.Load())
	}
	ws.measured(0, 0)
	ws.sentWhole(6)
	if got := b.total.Load(); got != 0 {
		t.Fatalf("%d bytes charged once everything was sent, want 0", got)
	}

	// A snapshot page waits for room on its own: a carried backlog is given back.
	if !b.charge(ws, 200) {
		t.Fatal("charge refused")
	}
	ws.measured(2, 200)
	ws.sentWhole(7)
	if rest := ws.takeCarried(500, true); rest != 500 || b.total.Load() != 0 {
		t.Fatalf("page: charges %d with %d still charged, want 500 and 0", rest, b.total.Load())
	}
}
