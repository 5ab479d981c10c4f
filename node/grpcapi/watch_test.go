package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/fsmtest"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/raftstore"
)

// TestWatchStalledOnItsReaderEndedPastItsBacklog: a watch whose reader
// takes two messages and then stops, while writes go on, is ended too
// slow once more than its bound of events wait behind the send that waits
// for the reader, naming the revision of the last message sent whole;
// the writes never wait for it, and the stream gives back its share of
// the agent's budget.
func TestWatchStalledOnItsReaderEndedPastItsBacklog(t *testing.T) {
	fsm := raftstore.NewFSM(1 << 12)
	w := fsmtest.NewWriter(t, fsm)
	metrics := &watchMetrics{}
	reg := NewRegistry(context.Background(), RegistryConfig{Agent: "a1", Replica: fsm, Metrics: metrics,
		WatchBacklog: WatchLimits{Events: 5, Bytes: 1 << 20}})
	done := make(chan watchResult, 1)
	s := startWatch(t, reg, &pb.WatchRequest{Service: "slow.rpc"}, 2, done)
	<-s.sent // the empty snapshot
	w.Register(&pb.Instance{Service: "slow.rpc", Id: "first", Address: "127.0.0.1:9000"})
	sentRev := w.Index()
	<-s.sent // the first event; the reader stops now
	w.Register(&pb.Instance{Service: "slow.rpc", Id: "second", Address: "127.0.0.1:9000"})
	testwait.For(t, 10*time.Second, "the send of the second event waiting for the reader", func() bool { return stackHas("(*stalledStream).Send(") })
	for i := range 20 {
		w.Register(&pb.Instance{Service: "slow.rpc", Id: fmt.Sprint(i), Address: "127.0.0.1:9000"})
	}
	var r watchResult
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the stalled watch was not ended")
	}
	st := status.Convert(r.err)
	if st.Code() != codes.Aborted || !errors.Is(apierr.FromStatus(r.err), apierr.ErrWatchTooSlow) {
		t.Fatalf("the stalled watch ended with %v, want Aborted watch too slow", r.err)
	}
	var resume *pb.WatchResume
	for _, d := range st.Details() {
		if r, ok := d.(*pb.WatchResume); ok {
			resume = r
		}
	}
	if resume == nil || resume.Revision != sentRev || !strings.Contains(st.Message(), fmt.Sprintf("resume from revision %d", sentRev)) {
		t.Fatalf("ended with %q (resume detail %v), want it to name revision %d, the last one sent", st.Message(), resume, sentRev)
	}
	if q := reg.WatchQueuedBytes(); q != 0 {
		t.Errorf("%d bytes still counted as queued after the stream ended", q)
	}
}

// TestWatchStreamHasNoGoroutineOfItsOwn: an idle Watch stream costs the
// agent no goroutine besides what any gRPC server stream costs (its
// handler's): N idle Watch streams add as many goroutines to the process
// (server and client) as N idle streams of grpc.health.v1's Watch, whose
// handler is one goroutine waiting.
func TestWatchStreamHasNoGoroutineOfItsOwn(t *testing.T) {
	const streams = 200
	fsm := raftstore.NewFSM(1 << 12)
	reg := NewRegistry(context.Background(), RegistryConfig{Agent: "a1", Replica: fsm, Metrics: &watchMetrics{}})
	addr := serveTest(t, Services{Registry: reg})
	cc := dialTest(t, addr)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	// perStream opens streams idle streams with open (each answers once
	// before it idles) and returns the goroutines they added.
	perStream := func(open func() error) int {
		before := settledGoroutines()
		for range streams {
			if err := open(); err != nil {
				t.Fatal(err)
			}
		}
		return settledGoroutines() - before
	}
	openHealth := func() error {
		s, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = s.Recv()
		}
		return err
	}
	// The server's stream workers (streamWorkers goroutines it keeps) run
	// the first streams' handlers; long streams keep them. Occupy them all
	// first, so both kinds are measured on goroutines of their own.
	for range streamWorkers {
		if err := openHealth(); err != nil {
			t.Fatal(err)
		}
	}
	healthStreams := perStream(openHealth)
	watchStreams := perStream(func() error {
		s, err := pb.NewRegistryClient(cc).Watch(ctx, &pb.WatchRequest{Service: "idle.rpc"})
		if err == nil {
			_, err = s.Recv() // the empty snapshot
		}
		return err
	})
	t.Logf("goroutines per stream: health watch %.2f, registry watch %.2f", float64(healthStreams)/streams, float64(watchStreams)/streams)
	if watchStreams > healthStreams+streams/4 {
		t.Fatalf("%d idle Watch streams added %d goroutines, %d idle health streams %d: a Watch stream has goroutines of its own",
			streams, watchStreams, streams, healthStreams)
	}
}

// settledGoroutines returns the number of goroutines once it has stopped
// changing for a moment.
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for range 50 {
		time.Sleep(20 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			return n
		}
		n = m
	}
	return n
}
