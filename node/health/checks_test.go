package health

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// TestChecksFollowTheInstancesGRPCHealth: the owning agent's checker writes
// an instance passing when grpc.health.v1 answers SERVING and critical when
// it does not; another agent's instance is not checked from here.
func TestChecksFollowTheInstancesGRPCHealth(t *testing.T) {
	addr, hs := grpctest.StartHealthServer(t)
	reg := newFakeRegistry()
	k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
	check := &pb.Check{Grpc: true, Interval: durationpb.New(50 * time.Millisecond), Timeout: durationpb.New(time.Second)}
	for _, owner := range []string{"a1", "a2"} {
		reg.register(&pb.Instance{Service: "checked.rpc", Id: owner, Node: owner, Address: addr, Check: check})
		reg.insts[instanceKey{"checked.rpc", owner}].Health = pb.Health_CRITICAL
	}
	runLoop(t, k.RunChecks)

	waitHealth := func(want pb.Health) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for reg.health("checked.rpc", "a1") != want {
			if time.Now().After(deadline) {
				t.Fatalf("instance health stayed %v, want %v", reg.health("checked.rpc", "a1"), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitHealth(pb.Health_PASSING)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	waitHealth(pb.Health_CRITICAL)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	waitHealth(pb.Health_PASSING)
	if h := reg.health("checked.rpc", "a2"); h != pb.Health_CRITICAL {
		t.Fatalf("another agent's instance was checked from here: %v", h)
	}
}

// spreadOK fails the test when the times in at are not spread over the
// checkSlot slots of span: a time off a slot's start, more than three
// times the even share in one slot, or all within half of span.
func spreadOK(t *testing.T, what string, at []time.Duration, span time.Duration) {
	t.Helper()
	slots := int(span / checkSlot)
	buckets := make(map[time.Duration]int)
	lo, hi := span, time.Duration(0)
	for _, d := range at {
		if d < 0 || d >= span {
			t.Fatalf("%s: a check runs %v on, outside the %v", what, d, span)
		}
		if d%checkSlot != 0 {
			t.Fatalf("%s: a check runs %v on, not at the start of a %v slot", what, d, checkSlot)
		}
		buckets[d]++
		lo, hi = min(lo, d), max(hi, d)
	}
	for b, n := range buckets {
		if n > 3*len(at)/slots {
			t.Fatalf("%s: %d of %d checks run in the slot at %v, want them spread over %d slots", what, n, len(at), b, slots)
		}
	}
	if hi-lo < span/2 {
		t.Fatalf("%s: %d checks run within %v of each other, want them spread over %v", what, len(at), hi-lo, span)
	}
}

// TestChecksSpreadOverTheInterval: 100 gRPC checks with an interval of
// 10 s that start together (an agent starting) run their first checks
// at once, and the runs after at places spread over the slots of the
// interval.
func TestChecksSpreadOverTheInterval(t *testing.T) {
	const interval = 10 * time.Second
	s := newCheckSchedule()
	t0 := time.Unix(1000, 0)
	check := &pb.Check{Grpc: true, Interval: durationpb.New(interval)}
	for i := range 100 {
		s.add(context.Background(), &pb.Instance{Service: "checked.rpc", Id: fmt.Sprintf("instance-%d", i), Node: "a1", Check: check}, t0)
	}
	for _, c := range s.checks {
		if c.next != t0 {
			t.Fatalf("a new check runs first %v on, want at once", c.next.Sub(t0))
		}
	}
	// Every check ran at once at t1; their next runs spread.
	t1 := t0.Add(5 * time.Second)
	for range 100 {
		c, _ := s.popDue(t1)
		s.finished(c, t1)
	}
	var later []time.Duration
	for _, c := range s.checks {
		later = append(later, c.next.Sub(t1)%interval) // a place at t1 itself comes next at t1+interval
	}
	spreadOK(t, "runs after", later, interval)
}

// TestChecksFollowRegistrationsAndRemovals: an instance registered while
// the checks run is checked, and its checks stop when it is removed.
func TestChecksFollowRegistrationsAndRemovals(t *testing.T) {
	srv := grpctest.StartHealthServers(t, 2)
	reg := newFakeRegistry()
	k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
	runLoop(t, k.RunChecks)
	testwait.For(t, 10*time.Second, "the checks to watch the registry", func() bool { return reg.watches.Load() > 0 })

	check := &pb.Check{Grpc: true, Interval: durationpb.New(20 * time.Millisecond), Timeout: durationpb.New(time.Second)}
	reg.register(&pb.Instance{Service: "checked.rpc", Id: "gone", Node: "a1", Address: srv[0].Addr, Check: check})
	testwait.For(t, 10*time.Second, "the new instance to be checked", func() bool { return srv[0].Calls.Load() > 0 })
	if _, err := reg.apply(&pb.Command{Kind: &pb.Command_Deregister{Deregister: &pb.InstanceRef{Service: "checked.rpc", Id: "gone"}}}); err != nil {
		t.Fatal(err)
	}
	reg.register(&pb.Instance{Service: "checked.rpc", Id: "next", Node: "a1", Address: srv[1].Addr, Check: check})
	// A check of the removed instance that was running when it was
	// removed is cancelled, but its request may reach the server after
	// the keeper has moved on: the count is read once the next instance
	// has been checked twice more, well after any such straggler.
	testwait.For(t, 10*time.Second, "the next instance to be checked three times", func() bool { return srv[1].Calls.Load() >= 3 })
	before := srv[0].Calls.Load()
	testwait.For(t, 10*time.Second, "the next instance to be checked five more times", func() bool { return srv[1].Calls.Load() >= 8 })
	if after := srv[0].Calls.Load(); after != before {
		t.Fatalf("the removed instance was checked %d more times", after-before)
	}
}

// TestChecksSendTheCheckedServerNoPings: a check is one call, and the
// checked server sees nothing else on the connection. With gRPC's
// dynamic windows every answer the checker read would make it ping the
// server too (gRPC measuring the link).
func TestChecksSendTheCheckedServerNoPings(t *testing.T) {
	srv := grpctest.StartHealthServers(t, 1)[0]
	reg := newFakeRegistry()
	k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
	check := &pb.Check{Grpc: true, Interval: durationpb.New(20 * time.Millisecond), Timeout: durationpb.New(time.Second)}
	reg.register(&pb.Instance{Service: "checked.rpc", Id: "a1", Node: "a1", Address: srv.Addr, Check: check})
	runLoop(t, k.RunChecks)

	const want = 10
	testwait.For(t, 20*time.Second, fmt.Sprintf("%d checks", want), func() bool { return srv.Calls.Load() >= want })
	if n := srv.Pings.Load(); n != 0 {
		t.Errorf("the checker sent the checked server %d pings beside %d checks, want none", n, srv.Calls.Load())
	}
}

// runLoop runs loop (a Keeper's RunChecks or RunTTLChecks) on a goroutine
// of its own until the test ends, and waits for it to return then.
func runLoop(t *testing.T, loop func(context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		loop(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// TestAListingEndsTheChecksOfInstancesNoLongerCheckedHere: a listing (the
// watch started again) has only instances with a check; the check of an
// instance registered again meanwhile without a gRPC check, or through
// another agent, stops here although the listing does not name it.
func TestAListingEndsTheChecksOfInstancesNoLongerCheckedHere(t *testing.T) {
	reg := newFakeRegistry()
	k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
	check := &pb.Check{Grpc: true, Interval: durationpb.New(time.Hour)}
	s := newCheckSchedule()
	t.Cleanup(s.closeAll)
	for _, id := range []string{"unchecked", "moved", "kept"} {
		s.add(t.Context(), reg.register(&pb.Instance{Service: "checked.rpc", Id: id, Node: "a1", Address: "127.0.0.1:1", Check: check}), time.Now())
	}
	reg.register(&pb.Instance{Service: "checked.rpc", Id: "unchecked", Node: "a1", Address: "127.0.0.1:1"})
	reg.register(&pb.Instance{Service: "checked.rpc", Id: "moved", Node: "a2", Address: "127.0.0.1:1", Check: check})

	listing := k.checkedListing()
	listing.Events = slices.DeleteFunc(listing.Events, func(ev *pb.Event) bool { return ev.Instance.Id == "moved" }) // a part without it
	k.followChecks(t.Context(), s, listing)
	if got := s.keys(); len(got) != 1 || got[0].id != "kept" {
		t.Fatalf("after the listing the agent checks %v, want only checked.rpc/kept", got)
	}
}

// longErrorHealth answers every check with an error whose message is
// longer than a health output may be, in characters of two bytes.
type longErrorHealth struct {
	healthpb.UnimplementedHealthServer
}

func (longErrorHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return nil, status.Error(codes.Internal, strings.Repeat("é", MaxOutput))
}

// TestACheckOutputIsCutToWhatTheAPIAccepts: a checked server whose error
// message is longer than a health output may be (a stack trace) still
// has its failure recorded, its output cut to MaxOutput bytes at a
// character boundary and saying so: forwarded whole to the leader, the
// result would be refused and the instance stay passing.
func TestACheckOutputIsCutToWhatTheAPIAccepts(t *testing.T) {
	addr := grpctest.Serve(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, longErrorHealth{}) })
	reg := newFakeRegistry()
	k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
	check := &pb.Check{Grpc: true, Interval: durationpb.New(50 * time.Millisecond), Timeout: durationpb.New(time.Second)}
	reg.register(&pb.Instance{Service: "verbose.rpc", Id: "a1", Node: "a1", Address: addr, Check: check, Health: pb.Health_PASSING})
	runLoop(t, k.RunChecks)
	testwait.For(t, 10*time.Second, "the failing check recorded", func() bool {
		return reg.health("verbose.rpc", "a1") == pb.Health_CRITICAL
	})
	out := reg.Instance("verbose.rpc", "a1").HealthOutput
	if len(out) > MaxOutput || !utf8.ValidString(out) || !strings.HasSuffix(out, "[cut to 4 KiB]") || !strings.Contains(out, "Internal: éé") {
		t.Fatalf("output of %d bytes (valid UTF-8 %v), ending %q: want at most %d, whole characters, the error's start and a mark",
			len(out), utf8.ValidString(out), out[max(0, len(out)-40):], MaxOutput)
	}
}
