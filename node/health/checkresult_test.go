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

	grpchealth "google.golang.org/grpc/health"
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
	reg, hs, inst, output := checkedDown(t)

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
	testwait.For(t, 10*time.Second, "zrpc_health_check_results_unwritten to count the 10 checks", func() bool {
		return k.Stats().ChecksUnwritten == 10
	})
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

// TestACheckResultIsNotWrittenToAnInstanceRegisteredAgainElsewhere: a
// run of the check of one version of an instance found its server
// serving; before its result was written, the instance was registered
// again at another address (or through another agent). The result is
// not about that version: it stays awaiting its own first check.
func TestACheckResultIsNotWrittenToAnInstanceRegisteredAgainElsewhere(t *testing.T) {
	addr, _ := grpctest.StartHealthServer(t) // "" is SERVING
	check := &pb.Check{Grpc: true, Interval: durationpb.New(time.Hour), Timeout: durationpb.New(5 * time.Second)}
	for _, tt := range []struct {
		name  string
		again func(inst *pb.Instance)
	}{
		{"another address", func(inst *pb.Instance) { inst.Address = clienttest.ClosedAddr(t) }},
		{"another agent", func(inst *pb.Instance) { inst.Node = "a2" }},
		{"no gRPC check", func(inst *pb.Instance) { inst.Check = nil }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reg := newFakeRegistry()
			k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
			inst := &pb.Instance{Service: "checked.rpc", Id: "i1", Node: "a1", Address: addr, Check: check}
			reg.registerAwaiting(inst)
			s := newCheckSchedule()
			t.Cleanup(s.closeAll)
			s.add(t.Context(), reg.Instance("checked.rpc", "i1"), time.Now())
			c, _ := s.popDue(time.Now())
			h, output, ok := k.runCheck(c)
			if !ok || h != pb.Health_PASSING {
				t.Fatalf("the check of a serving server found %v %q (ok %v), want passing", h, output, ok)
			}

			again := proto.Clone(inst).(*pb.Instance)
			tt.again(again)
			reg.registerAwaiting(again)
			reg.written()
			k.recordCheck(s, c, h, output)
			if w := reg.written(); len(w) != 0 {
				t.Fatalf("the result of the check of the version before wrote %v", w)
			}
			if got := reg.Instance("checked.rpc", "i1"); got.Health != pb.Health_CRITICAL || got.HealthOutput != AwaitingFirstCheck {
				t.Fatalf("the instance registered again is %v %q, want critical %q", got.Health, got.HealthOutput, AwaitingFirstCheck)
			}
		})
	}
}

// TestACheckThatTimedOutWhileTheAgentStalledRunsAgain: a run that timed
// out while the agent did not run (stopped, its VM paused, starved of
// CPU) says nothing of the server, whose answer may have waited unread:
// the instance is not written critical, and the check runs again at once
// instead of an interval (here an hour) later.
func TestACheckThatTimedOutWhileTheAgentStalledRunsAgain(t *testing.T) {
	addr, hs := serveUnanswering(t)
	reg := newFakeRegistry()
	var lost atomic.Int64
	k := New(Config{Agent: "a1", Replica: reg, Writer: reg, Interval: time.Hour,
		Lost: func() time.Duration { return time.Duration(lost.Load()) }, Logger: testlog.New(t, "a1")})
	check := &pb.Check{Grpc: true, Interval: durationpb.New(time.Hour), Timeout: durationpb.New(2 * time.Second)}
	reg.register(&pb.Instance{Service: "checked.rpc", Id: "i1", Node: "a1", Address: addr, Check: check})
	runLoop(t, k.RunChecks)

	testwait.For(t, 10*time.Second, "the first check to reach the server", func() bool { return hs.inProgress.Load() == 1 })
	lost.Add(int64(5 * time.Second)) // the agent stops while the call waits
	hs.answer.Store(true)            // the calls after this one are answered
	testwait.For(t, 10*time.Second, "the check to run again and find the server serving", func() bool {
		return hs.ended.Load() == 1 && reg.Instance("checked.rpc", "i1").GetHealthOutput() == "gRPC health check: SERVING"
	})
	for _, w := range reg.written() {
		if sh := w.GetSetHealth(); sh.GetHealth() == pb.Health_CRITICAL {
			t.Fatalf("a check that timed out while the agent stalled wrote %v", w)
		}
	}
}

// TestARegistrationAgainAfterAFailedCheckIsCheckedAtOnce: an instance
// registered again with the same check and address (its process
// restarted) awaits its first check; the last run having found the
// server down does not leave it so until its next place in the interval
// (here an hour). A server up now turns it passing, and one still down
// replaces "awaiting first gRPC health check" with why at once, though
// the check wrote an output moments ago.
func TestARegistrationAgainAfterAFailedCheckIsCheckedAtOnce(t *testing.T) {
	for _, up := range []bool{true, false} {
		t.Run(fmt.Sprintf("server up %v", up), func(t *testing.T) {
			reg, hs, inst, output := checkedDown(t)

			if up {
				hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
			}
			reg.registerAwaiting(inst)
			testwait.For(t, 10*time.Second, "the check of the registration again", func() bool {
				if up {
					return reg.health("checked.rpc", "i1") == pb.Health_PASSING
				}
				return strings.HasSuffix(output(), "NOT_SERVING")
			})
		})
	}
}

// checkedDown registers an instance awaiting its first gRPC check, of
// an hour's interval, whose server is NOT_SERVING, runs the checks and
// waits for the first result; it returns the registry, the server, the
// instance and its current output.
func checkedDown(t *testing.T) (*fakeRegistry, *grpchealth.Server, *pb.Instance, func() string) {
	t.Helper()
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
	return reg, hs, inst, output
}

// TestACheckReplacesAgentFailedAtOnce: the leader writes the instances of
// an agent it finds failed critical, "agent failed"; when the agent's
// check, still running, finds the instance critical for a reason of its
// own, that reason is written at once, not up to outputRefresh later
// (the health is the same, but the operator would read the wrong cause).
func TestACheckReplacesAgentFailedAtOnce(t *testing.T) {
	reg := newFakeRegistry()
	k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
	addr, hs := grpctest.StartHealthServer(t)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	check := &pb.Check{Grpc: true, Interval: durationpb.New(20 * time.Millisecond), Timeout: durationpb.New(time.Second)}
	reg.registerAwaiting(&pb.Instance{Service: "checked.rpc", Id: "i1", Node: "a1", Address: addr, Check: check})
	runLoop(t, k.RunChecks)
	output := func() string { return reg.Instance("checked.rpc", "i1").GetHealthOutput() }
	testwait.For(t, 10*time.Second, "the first check's result", func() bool { return strings.HasSuffix(output(), "NOT_SERVING") })

	failed := &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: &pb.SetHealth{
		Health: pb.Health_CRITICAL, Output: AgentFailed, Instances: []*pb.InstanceRef{{Service: "checked.rpc", Id: "i1"}},
	}}}
	if _, err := reg.apply(failed); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "the check's own reason to replace "+AgentFailed, func() bool {
		return strings.HasSuffix(output(), "NOT_SERVING")
	})
	if h := reg.health("checked.rpc", "i1"); h != pb.Health_CRITICAL {
		t.Fatalf("health %v, want critical", h)
	}
}

// TestACheckReplacesOutputsItDidNotWriteAtOnce: outputs others wrote of
// an instance this agent checks (the leader's when its agent is alive
// again, or when it reaped the agent and kept the instance) are replaced
// by the check's own at once, though the check wrote an output moments
// ago: the check, running, says why the instance has its health, and an
// operator must not read a stale cause for up to outputRefresh.
func TestACheckReplacesOutputsItDidNotWriteAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status healthpb.HealthCheckResponse_ServingStatus
		health pb.Health
		output string
	}{
		{"agent alive again", healthpb.HealthCheckResponse_SERVING, pb.Health_PASSING, AgentAliveAgain},
		{"agent reaped", healthpb.HealthCheckResponse_NOT_SERVING, pb.Health_CRITICAL,
			"removed with its agent a1: failed for 72h0m0s; the instance stays until it is deregistered, or passes again when a1 is back"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newFakeRegistry()
			k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
			addr, hs := grpctest.StartHealthServer(t)
			hs.SetServingStatus("", tc.status)
			check := &pb.Check{Grpc: true, Interval: durationpb.New(20 * time.Millisecond), Timeout: durationpb.New(time.Second)}
			reg.registerAwaiting(&pb.Instance{Service: "checked.rpc", Id: "i1", Node: "a1", Address: addr, Check: check})
			runLoop(t, k.RunChecks)
			output := func() string { return reg.Instance("checked.rpc", "i1").GetHealthOutput() }
			testwait.For(t, 10*time.Second, "the first check's result", func() bool {
				return strings.HasSuffix(output(), tc.status.String())
			})

			leaders := &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: &pb.SetHealth{
				Health: tc.health, Output: tc.output, Instances: []*pb.InstanceRef{{Service: "checked.rpc", Id: "i1"}},
			}}}
			if _, err := reg.apply(leaders); err != nil {
				t.Fatal(err)
			}
			testwait.For(t, 10*time.Second, "the check's own output to replace "+tc.output, func() bool {
				return strings.HasSuffix(output(), tc.status.String())
			})
			if h := reg.health("checked.rpc", "i1"); h != tc.health {
				t.Fatalf("health %v, want %v", h, tc.health)
			}
		})
	}
}
