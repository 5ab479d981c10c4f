package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// registerAwaiting stores inst as an agent registers a gRPC-checked
// instance: critical, awaiting its first check.
func (f *fakeRegistry) registerAwaiting(inst *pb.Instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	inst = proto.Clone(inst).(*pb.Instance)
	inst.ModRevision, inst.Health, inst.HealthOutput = f.rev, pb.Health_CRITICAL, AwaitingFirstCheck
	f.insts[instanceKey{inst.Service, inst.Id}] = inst
	f.publish(pb.Event_PUT, inst)
}

// TestAFailingFirstCheckSaysWhy: an instance whose server is down from
// the start stays critical, and its output says what the check found
// instead of "awaiting first gRPC health check".
func TestAFailingFirstCheckSaysWhy(t *testing.T) {
	reg := newFakeRegistry()
	k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
	addr := clienttest.ClosedAddr(t)
	check := &pb.Check{Grpc: true, Interval: durationpb.New(time.Hour), Timeout: durationpb.New(time.Second)}
	reg.registerAwaiting(&pb.Instance{Service: "checked.rpc", Id: "i1", Node: "a1", Address: addr, Check: check})
	runLoop(t, k.RunChecks)

	want := "gRPC health check of " + addr + " failed: Unavailable: "
	testwait.For(t, 10*time.Second, "the check's output to replace "+AwaitingFirstCheck, func() bool {
		return strings.Contains(reg.Instance("checked.rpc", "i1").GetHealthOutput(), want)
	})
	if h := reg.health("checked.rpc", "i1"); h != pb.Health_CRITICAL {
		t.Fatalf("health %v, want critical", h)
	}
}

// TestACheckRunsAgainWhenItsResultIsContradicted: when someone else
// writes a health the last check contradicts (an agent alive again marks
// its instances passing; a registration again makes one await its first
// check), the check runs again at once, not an interval (here an hour)
// later.
func TestACheckRunsAgainWhenItsResultIsContradicted(t *testing.T) {
	reg := newFakeRegistry()
	k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
	addr, hs := grpctest.StartHealthServer(t)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	check := &pb.Check{Grpc: true, Interval: durationpb.New(time.Hour), Timeout: durationpb.New(time.Second)}
	inst := &pb.Instance{Service: "checked.rpc", Id: "i1", Node: "a1", Address: addr, Check: check}
	reg.registerAwaiting(inst)
	runLoop(t, k.RunChecks)
	output := func() string { return reg.Instance("checked.rpc", "i1").GetHealthOutput() }
	testwait.For(t, 10*time.Second, "the first check's result", func() bool { return strings.HasSuffix(output(), "NOT_SERVING") })

	// The agent was failed and is alive again: every instance it owns
	// is written passing.
	alive := &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: &pb.SetHealth{
		Health: pb.Health_PASSING, Output: AgentAliveAgain, Instances: []*pb.InstanceRef{{Service: "checked.rpc", Id: "i1"}},
	}}}
	if _, err := reg.apply(alive); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "the check to find the server down again", func() bool {
		return reg.health("checked.rpc", "i1") == pb.Health_CRITICAL && strings.HasSuffix(output(), "NOT_SERVING")
	})

	// The server is up, and its process registers again, with another
	// check timeout (a new check, run at once), then once more as it was.
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	changed := proto.Clone(inst).(*pb.Instance)
	changed.Check.Timeout = durationpb.New(2 * time.Second)
	reg.registerAwaiting(changed)
	testwait.For(t, 10*time.Second, "the new check to find the server serving", func() bool {
		return reg.health("checked.rpc", "i1") == pb.Health_PASSING
	})
	reg.registerAwaiting(changed)
	testwait.For(t, 10*time.Second, "the check of the registration again", func() bool {
		return reg.health("checked.rpc", "i1") == pb.Health_PASSING
	})
}

// TestACheckWritesANewOutputOfTheSameHealthAtMostOncePerRefresh: a
// server that stays down but fails differently does not cost a Raft
// write per check; its first failure's output is written.
func TestACheckWritesANewOutputOfTheSameHealthAtMostOncePerRefresh(t *testing.T) {
	reg := newFakeRegistry()
	k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
	addr, hs := grpctest.StartHealthServer(t)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	check := &pb.Check{Grpc: true, Interval: durationpb.New(20 * time.Millisecond), Timeout: durationpb.New(time.Second)}
	reg.registerAwaiting(&pb.Instance{Service: "checked.rpc", Id: "i1", Node: "a1", Address: addr, Check: check})
	runLoop(t, k.RunChecks)
	testwait.For(t, 10*time.Second, "the first check's result", func() bool {
		return strings.HasSuffix(reg.Instance("checked.rpc", "i1").GetHealthOutput(), "NOT_SERVING")
	})
	before := len(reg.written())
	// From now on every check fails as NOT_SERVING or UNKNOWN in turn.
	deadline := time.Now().Add(time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		status := healthpb.HealthCheckResponse_UNKNOWN
		if i%2 == 0 {
			status = healthpb.HealthCheckResponse_NOT_SERVING
		}
		hs.SetServingStatus("", status)
		time.Sleep(30 * time.Millisecond)
	}
	if n := len(reg.written()); n != 0 {
		t.Fatalf("%d more health writes for a server that stayed down (first result: %d), want none within %s", n, before, outputRefresh)
	}
	if h := reg.health("checked.rpc", "i1"); h != pb.Health_CRITICAL {
		t.Fatalf("health %v, want critical", h)
	}
}

// refusingWriter refuses every write, as for an agent cut off from the
// leader, and counts them.
type refusingWriter struct{ tries atomic.Int64 }

func (w *refusingWriter) Propose(context.Context, *pb.Command) (uint64, error) {
	w.tries.Add(1)
	return 0, errors.New("no cluster leader")
}

func (w *refusingWriter) ApplyLocal(ctx context.Context, cmd *pb.Command) (uint64, error) {
	return w.Propose(ctx, cmd)
}

// TestCheckResultsThatCannotBeWrittenAreWarnedOfOncePerPeriod: cut off
// from the leader, an agent fails to write the results of every check;
// it warns once per recordWarnEvery, not once per check.
func TestCheckResultsThatCannotBeWrittenAreWarnedOfOncePerPeriod(t *testing.T) {
	reg := newFakeRegistry()
	w := &refusingWriter{}
	var logs testlog.Buffer
	k := New(Config{Agent: "a1", Replica: reg, Writer: w, Interval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	check := &pb.Check{Grpc: true, Interval: durationpb.New(20 * time.Millisecond), Timeout: durationpb.New(time.Second)}
	addr := clienttest.ClosedAddr(t)
	for i := range 10 {
		reg.registerAwaiting(&pb.Instance{Service: "checked.rpc", Id: fmt.Sprint("i", i), Node: "a1", Address: addr, Check: check})
	}
	runLoop(t, k.RunChecks)
	testwait.For(t, 10*time.Second, "checks to fail to write 50 results", func() bool { return w.tries.Load() >= 50 })
	if n := strings.Count(logs.String(), "could not record health check result"); n != 1 {
		t.Fatalf("%d warnings for %d results not written, want 1 per %s:\n%s", n, w.tries.Load(), recordWarnEvery, logs.String())
	}
}

// flakyWriter refuses the first writes it is given, then writes to reg.
type flakyWriter struct {
	*fakeRegistry
	refuse atomic.Int64
}

func (w *flakyWriter) Propose(ctx context.Context, cmd *pb.Command) (uint64, error) {
	if w.refuse.Add(-1) >= 0 {
		return 0, errors.New("no cluster leader")
	}
	return w.fakeRegistry.Propose(ctx, cmd)
}

// TestACheckWhoseResultWasNotWrittenRunsAgainSoon: a result the registry
// refused (no leader for a moment) is not left out until the next place
// in the interval (an hour here): the check runs again within seconds,
// backing off while writes keep failing.
func TestACheckWhoseResultWasNotWrittenRunsAgainSoon(t *testing.T) {
	reg := newFakeRegistry()
	w := &flakyWriter{fakeRegistry: reg}
	w.refuse.Store(2)
	k := New(Config{Agent: "a1", Replica: reg, Writer: w, Interval: time.Hour, Logger: testlog.New(t, "a1")})
	check := &pb.Check{Grpc: true, Interval: durationpb.New(time.Hour), Timeout: durationpb.New(time.Second)}
	reg.registerAwaiting(&pb.Instance{Service: "checked.rpc", Id: "i1", Node: "a1", Address: clienttest.ClosedAddr(t), Check: check})
	runLoop(t, k.RunChecks)
	testwait.For(t, 10*time.Second, "the check's result to be written after two refusals", func() bool {
		return strings.Contains(reg.Instance("checked.rpc", "i1").GetHealthOutput(), "Unavailable")
	})
}

// TestACheckContradictedWhileItRunsRunsAgainWhenItEnds: runNow on a
// running check asks for the next run as soon as this one ends.
func TestACheckContradictedWhileItRunsRunsAgainWhenItEnds(t *testing.T) {
	s := newCheckSchedule()
	inst := &pb.Instance{Service: "checked.rpc", Id: "i1", Node: "a1", Address: "127.0.0.1:1",
		Check: &pb.Check{Grpc: true, Interval: durationpb.New(time.Hour)}}
	now := time.Now()
	s.add(context.Background(), inst, now)
	c, _ := s.popDue(now)
	if c == nil {
		t.Fatal("the new check is not due")
	}
	s.runNow(keyOf(inst))
	end := now.Add(time.Second)
	s.finished(c, end)
	if next, wait := s.popDue(end); next != c {
		t.Fatalf("after a run contradicted while running, the next is due in %s, want at once", wait)
	}
}

func TestACheckWithoutTimeoutEndsWithinItsInterval(t *testing.T) {
	for _, tt := range []struct {
		chk  *pb.Check
		want time.Duration
	}{
		{&pb.Check{Grpc: true, Interval: durationpb.New(time.Second)}, time.Second},
		{&pb.Check{Grpc: true, Interval: durationpb.New(10 * time.Second)}, DefaultCheckTimeout},
		{&pb.Check{Grpc: true, Interval: durationpb.New(time.Second), Timeout: durationpb.New(300 * time.Millisecond)}, 300 * time.Millisecond},
	} {
		if got := checkTimeout(tt.chk); got != tt.want {
			t.Errorf("timeout of %v: %s, want %s", tt.chk, got, tt.want)
		}
	}
}
