package health

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// unansweringHealth is a grpc.health.v1 server that accepts every Check
// and answers none (a deadlocked service) until answer is set, SERVING
// then. It counts the calls it holds and those that ended unanswered.
type unansweringHealth struct {
	healthpb.UnimplementedHealthServer
	answer            atomic.Bool
	inProgress, ended atomic.Int64
}

func (h *unansweringHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if h.answer.Load() {
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	}
	h.inProgress.Add(1)
	defer func() {
		h.inProgress.Add(-1)
		h.ended.Add(1)
	}()
	<-ctx.Done()
	return nil, ctx.Err()
}

// serveUnanswering starts an unansweringHealth server on 127.0.0.1 until
// the test ends.
func serveUnanswering(t *testing.T) (string, *unansweringHealth) {
	hs := &unansweringHealth{}
	return grpctest.Serve(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) }), hs
}

// TestHungServersDoNotHoldUpTheChecksOfOthers: many instances whose
// server accepts the check and never answers, with the longest timeout
// the agent accepts (their interval, an hour), are all checked at once,
// and while every one of those checks is still waiting, a healthy
// instance registered next turns passing and one whose server is gone
// turns critical.
func TestHungServersDoNotHoldUpTheChecksOfOthers(t *testing.T) {
	const hung = 64
	hungAddr, hs := serveUnanswering(t)
	reg := newFakeRegistry()
	k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
	hungCheck := &pb.Check{Grpc: true, Interval: durationpb.New(time.Hour), Timeout: durationpb.New(time.Hour)}
	for i := range hung {
		reg.registerAwaiting(&pb.Instance{Service: "hung.rpc", Id: fmt.Sprint("h", i), Node: "a1", Address: hungAddr, Check: hungCheck})
	}
	runLoop(t, k.RunChecks)
	testwait.ForExplained(t, 20*time.Second, fmt.Sprintf("the checks of all %d hung instances to run at once", hung),
		func() bool { return hs.inProgress.Load() == hung },
		func() string { return fmt.Sprintf(": %d in progress, %d ended", hs.inProgress.Load(), hs.ended.Load()) })

	okAddr, _ := grpctest.StartHealthServer(t)
	check := &pb.Check{Grpc: true, Interval: durationpb.New(200 * time.Millisecond), Timeout: durationpb.New(time.Second)}
	reg.registerAwaiting(&pb.Instance{Service: "ok.rpc", Id: "i1", Node: "a1", Address: okAddr, Check: check})
	reg.register(&pb.Instance{Service: "gone.rpc", Id: "i1", Node: "a1", Address: clienttest.ClosedAddr(t), Check: check})
	testwait.ForExplained(t, 20*time.Second, "the healthy instance to pass and the gone one to turn critical",
		func() bool {
			return reg.health("ok.rpc", "i1") == pb.Health_PASSING && reg.health("gone.rpc", "i1") == pb.Health_CRITICAL
		},
		func() string {
			return fmt.Sprintf(": ok.rpc/i1 %v %q, gone.rpc/i1 %v %q", reg.health("ok.rpc", "i1"), reg.Instance("ok.rpc", "i1").GetHealthOutput(),
				reg.health("gone.rpc", "i1"), reg.Instance("gone.rpc", "i1").GetHealthOutput())
		})
	if n := hs.ended.Load(); n != 0 {
		t.Fatalf("%d hung checks ended before the others were checked: the others waited for them", n)
	}
}

// TestACheckRunLastsAtMostMaxCheckTimeout: whatever timeout an instance
// sets (the agent accepts one up to its interval), a run that gets no
// answer gives up after maxCheckTimeout.
func TestACheckRunLastsAtMostMaxCheckTimeout(t *testing.T) {
	for _, tt := range []struct {
		interval, timeout, want time.Duration
	}{
		{time.Hour, time.Hour, maxCheckTimeout},
		{time.Minute, 30 * time.Second, maxCheckTimeout},
		{time.Minute, maxCheckTimeout, maxCheckTimeout},
		{time.Minute, 5 * time.Second, 5 * time.Second},
	} {
		chk := &pb.Check{Grpc: true, Interval: durationpb.New(tt.interval), Timeout: durationpb.New(tt.timeout)}
		if got := checkTimeout(chk); got != tt.want {
			t.Errorf("a run of a check with interval %v and timeout %v lasts up to %v, want %v", tt.interval, tt.timeout, got, tt.want)
		}
	}
}

// TestACheckIsSlowFromATimeoutUntilItAnswers: a run that takes its whole
// timeout marks its check slow, and its next run counts as a slow run
// while it lasts; a run that is answered makes it an ordinary check again.
func TestACheckIsSlowFromATimeoutUntilItAnswers(t *testing.T) {
	addr, hs := serveUnanswering(t)
	k := newTestKeeper(t, newFakeRegistry(), &fakeClock{now: time.Unix(1000, 0)})
	s := newCheckSchedule()
	t.Cleanup(s.closeAll)
	k.schedule.Store(s)
	inst := &pb.Instance{Service: "hung.rpc", Id: "i1", Node: "a1", Address: addr,
		Check: &pb.Check{Grpc: true, Interval: durationpb.New(time.Hour), Timeout: durationpb.New(50 * time.Millisecond)}}
	s.add(t.Context(), inst, time.Now())
	run := func(wantSlowRuns int) (slow bool) {
		t.Helper()
		s.runNow(keyOf(inst))
		c, wait := s.popDue(time.Now())
		if c == nil {
			t.Fatalf("the check asked to run now is due in %v", wait)
		}
		if st := k.Stats(); s.slowRuns != wantSlowRuns || st.SlowChecksRunning != wantSlowRuns || st.ChecksRunning != 1-wantSlowRuns {
			t.Fatalf("%d slow runs in progress (stats %+v), want %d", s.slowRuns, st, wantSlowRuns)
		}
		k.runCheck(c)
		s.finished(c, time.Now())
		if s.slowRuns != 0 {
			t.Fatalf("%d slow runs in progress after the run ended", s.slowRuns)
		}
		return c.slow
	}

	if run(0) != true {
		t.Fatal("a run that took its whole timeout left its check ordinary")
	}
	hs.answer.Store(true)
	if run(1) != false {
		t.Fatal("a run that was answered left its check slow")
	}
}

// TestSlowChecksLeaveRunsToTheOthers: while slowCheckRuns checks whose
// last run timed out are running, another such check due is deferred by
// a slot, and an ordinary check due runs at once; the deferred one runs
// once a slow run has ended.
func TestSlowChecksLeaveRunsToTheOthers(t *testing.T) {
	s := newCheckSchedule()
	now := time.Now()
	check := &pb.Check{Grpc: true, Interval: durationpb.New(time.Hour)}
	for i := range slowCheckRuns + 1 {
		s.add(t.Context(), &pb.Instance{Service: "hung.rpc", Id: fmt.Sprint("h", i), Node: "a1", Check: check}, now)
	}
	for _, c := range s.checks {
		c.slow = true
	}
	s.add(t.Context(), &pb.Instance{Service: "ok.rpc", Id: "i1", Node: "a1", Check: check}, now)

	var slow []*scheduledCheck
	ordinary := 0
	c, wait := s.popDue(now)
	for ; c != nil; c, wait = s.popDue(now) {
		if c.slow {
			slow = append(slow, c)
		} else {
			ordinary++
		}
	}
	if len(slow) != slowCheckRuns || ordinary != 1 {
		t.Fatalf("%d slow and %d ordinary checks run at once, want %d and 1", len(slow), ordinary, slowCheckRuns)
	}
	if wait <= 0 || wait > checkSlot {
		t.Fatalf("the deferred slow check is due in %v, want within a slot (%v)", wait, checkSlot)
	}
	var deferred *scheduledCheck
	for _, c := range s.checks {
		if c.index >= 0 {
			deferred = c
		}
	}
	s.finished(slow[0], now)
	for {
		c, wait := s.popDue(now.Add(checkSlot))
		if c == deferred {
			break
		}
		if c == nil {
			t.Fatalf("after a slow run ended the deferred slow check did not run a slot later (due in %v)", wait)
		}
	}
}

// TestACheckRunsNextADurationAfterItsLastRun: after a run that ended at
// now (read from time.Now, with its monotonic reading), the next run is
// at the check's place on the wall clock, and kept as now plus a
// duration: it has a monotonic reading, so that a step of the wall clock
// does not move it (a step back of D held every check D longer, a step
// forward ran them all at once).
func TestACheckRunsNextADurationAfterItsLastRun(t *testing.T) {
	for _, interval := range []time.Duration{500 * time.Millisecond, 10 * time.Second, time.Hour} {
		s := newCheckSchedule()
		inst := &pb.Instance{Service: "checked.rpc", Id: "i1", Node: "a1", Address: "127.0.0.1:1",
			Check: &pb.Check{Grpc: true, Interval: durationpb.New(interval)}}
		now := time.Now()
		s.add(t.Context(), inst, now)
		c, _ := s.popDue(now)
		s.finished(c, now)
		if !strings.Contains(c.next.String(), "m=") {
			t.Errorf("interval %v: the next run %v has no monotonic reading", interval, c.next)
		}
		if d := c.next.Sub(now); d <= 0 || d > interval {
			t.Errorf("interval %v: the next run is %v after the last, want within the interval", interval, d)
		}
		if at, want := c.next.Sub(c.next.Truncate(interval)), checkOffset(c.key, interval); at != want {
			t.Errorf("interval %v: the next run is %v into its interval on the wall clock, want at its place %v", interval, at, want)
		}
		if _, wait := s.popDue(now); wait != c.next.Sub(now) {
			t.Errorf("interval %v: the schedule waits %v for a run %v away", interval, wait, c.next.Sub(now))
		}
	}
}

// TestOrdinaryChecksRunAtMostOrdinaryCheckRunsAtOnce: checks that answer
// run at most ordinaryCheckRuns at once (a slot's checks all come due
// together, and all at once they cost the agent a third more CPU); the
// next runs once one ends, and the dispatcher is told so (earlier).
func TestOrdinaryChecksRunAtMostOrdinaryCheckRunsAtOnce(t *testing.T) {
	s := newCheckSchedule()
	t.Cleanup(s.closeAll)
	now := time.Now()
	check := &pb.Check{Grpc: true, Interval: durationpb.New(time.Hour)}
	for i := range ordinaryCheckRuns + 1 {
		s.add(t.Context(), &pb.Instance{Service: "ok.rpc", Id: fmt.Sprint("i", i), Node: "a1", Check: check}, now)
	}
	var running []*scheduledCheck
	for c, _ := s.popDue(now); c != nil; c, _ = s.popDue(now) {
		running = append(running, c)
	}
	if len(running) != ordinaryCheckRuns {
		t.Fatalf("%d ordinary checks run at once, want %d", len(running), ordinaryCheckRuns)
	}
	select { // drain what the adds signalled
	case <-s.earlier:
	default:
	}
	s.finished(running[0], now)
	select {
	case <-s.earlier:
	default:
		t.Fatal("a run ended with the ordinary runs full, and the dispatcher was not told")
	}
	if c, wait := s.popDue(now); c == nil {
		t.Fatalf("after a run ended the waiting ordinary check did not run (due in %v)", wait)
	}
	if c, _ := s.popDue(now); c != nil {
		t.Fatalf("%s ran beyond %d ordinary runs", c.key, ordinaryCheckRuns)
	}
}
