package health

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/stall"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// startTTLs hands k's TTL tracker the replica's checked instances at now,
// as the leader's TTL loop does when it starts.
func startTTLs(k *Keeper, now time.Time) {
	for _, ev := range k.checkedListing().Events {
		k.ttl.observe(ev.Instance, now)
	}
}

func ttlInstance(id string, ttl time.Duration) *pb.Instance {
	return &pb.Instance{Service: "ttl.rpc", Id: id, Node: "a1", Address: "127.0.0.1:9001", Check: &pb.Check{Ttl: durationpb.New(ttl)}}
}

// TestSweepWritesCriticalForExpiredTTLOnly: a sweep past an instance's TTL
// writes it critical in one SetHealth entry; an instance renewed within its
// TTL gets no write at all.
func TestSweepWritesCriticalForExpiredTTLOnly(t *testing.T) {
	reg := newFakeRegistry()
	t0 := time.Unix(1000, 0)
	clock := &fakeClock{now: t0}
	k := newTestKeeper(t, reg, clock)
	reg.register(ttlInstance("expired", 10*time.Second))
	reg.register(ttlInstance("renewed", 10*time.Second))
	ctx := context.Background()

	startTTLs(k, t0) // starts both TTLs
	clock.set(t0.Add(8 * time.Second))
	if _, err := k.RenewTTL(ctx, "ttl.rpc", "renewed"); err != nil {
		t.Fatal(err)
	}
	if w := reg.written(); len(w) != 0 {
		t.Fatalf("a sweep within the TTL and a renewal of a passing instance wrote %v", w)
	}
	k.sweep(ctx, t0.Add(12*time.Second))
	w := reg.written()
	if len(w) != 1 {
		t.Fatalf("sweep past one TTL wrote %d entries, want 1: %v", len(w), w)
	}
	sh := w[0].GetSetHealth()
	if sh == nil || sh.Health != pb.Health_CRITICAL || len(sh.Instances) != 1 || sh.Instances[0].Id != "expired" {
		t.Fatalf("sweep wrote %v, want SetHealth critical of ttl.rpc/expired only", w[0])
	}
	if h := reg.health("ttl.rpc", "renewed"); h != pb.Health_PASSING {
		t.Fatalf("renewed instance is %v, want passing", h)
	}
	if st := k.Stats(); st.TTLExpired != 1 || st.CriticalRemoved != 0 {
		t.Fatalf("stats %+v after one expiry, want TTLExpired 1 (zrpc_health_ttl_expired_total)", st)
	}
}

// deregisterAfterInstances registers ttl.rpc/ids with a 10 s TTL and a
// one-minute deregister_critical_after.
func deregisterAfterInstances(reg *fakeRegistry, ids ...string) {
	for _, id := range ids {
		in := ttlInstance(id, 10*time.Second)
		in.Check.DeregisterCriticalAfter = durationpb.New(time.Minute)
		reg.register(in)
	}
}

// makeCritical turns ttl.rpc/id critical with health_since since, as a
// leader's SetHealth would, and returns its new version.
func makeCritical(reg *fakeRegistry, id string, since time.Time) *pb.Instance {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	reg.rev++
	in := reg.insts[instanceKey{"ttl.rpc", id}]
	in.Health, in.HealthSince, in.ModRevision = pb.Health_CRITICAL, since.UnixNano(), reg.rev
	return in
}

// TestSweepRemovesInstanceCriticalPastDeregisterAfter: an instance critical
// for longer than its deregister_critical_after is deregistered; one
// critical for less is kept until its time comes.
func TestSweepRemovesInstanceCriticalPastDeregisterAfter(t *testing.T) {
	reg := newFakeRegistry()
	t0 := time.Unix(1000, 0)
	k := newTestKeeper(t, reg, &fakeClock{now: t0})
	deregisterAfterInstances(reg, "long", "short")
	startTTLs(k, t0)
	k.ttl.observe(makeCritical(reg, "long", t0), t0)
	k.ttl.observe(makeCritical(reg, "short", t0.Add(30*time.Second)), t0.Add(30*time.Second))

	k.sweep(context.Background(), t0.Add(61*time.Second))
	w := reg.written()
	if len(w) != 1 || w[0].GetDeregister().GetId() != "long" {
		t.Fatalf("sweep wrote %v, want one Deregister of ttl.rpc/long", w)
	}
	if reg.Instance("ttl.rpc", "short") == nil {
		t.Fatal("an instance critical for less than deregister_critical_after was removed")
	}
	k.sweep(context.Background(), t0.Add(91*time.Second))
	if reg.Instance("ttl.rpc", "short") != nil {
		t.Fatal("an instance critical for longer than deregister_critical_after was kept")
	}
	if st := k.Stats(); st.CriticalRemoved != 2 {
		t.Fatalf("stats %+v after two removals, want CriticalRemoved 2 (zrpc_health_critical_removed_total)", st)
	}
}

// TestNewLeaderCountsDeregisterAfterOnItsOwnClock: health_since is stamped
// by the clock of the agent that led when the instance turned critical. A
// new leader whose clock runs an hour ahead of that one's sees every such
// instance critical for an hour; it must not remove them at once, but
// count deregister_critical_after from when it first saw them critical. A
// later spell, begun under it, is counted from its start.
func TestNewLeaderCountsDeregisterAfterOnItsOwnClock(t *testing.T) {
	reg := newFakeRegistry()
	t0 := time.Unix(1000, 0) // the new leader's clock when it takes over
	k := newTestKeeper(t, reg, &fakeClock{now: t0})
	deregisterAfterInstances(reg, "a", "b")
	// Both turned critical ten seconds before, by the previous leader's
	// clock, an hour behind this one's.
	makeCritical(reg, "a", t0.Add(-time.Hour-10*time.Second))
	makeCritical(reg, "b", t0.Add(-time.Hour-10*time.Second))

	startTTLs(k, t0)
	ctx := context.Background()
	k.sweep(ctx, t0)
	k.sweep(ctx, t0.Add(59*time.Second))
	if w := reg.written(); len(w) != 0 {
		t.Fatalf("a new leader removed instances critical for less than deregister_critical_after on its clock: %v", w)
	}
	k.sweep(ctx, t0.Add(61*time.Second))
	if reg.Instance("ttl.rpc", "a") != nil || reg.Instance("ttl.rpc", "b") != nil {
		t.Fatal("instances critical for a whole deregister_critical_after under the new leader were kept")
	}

	// A spell that begins under this leader counts from its start, not
	// from when the leader took over.
	deregisterAfterInstances(reg, "c")
	later := t0.Add(10 * time.Minute)
	k.ttl.observe(reg.Instance("ttl.rpc", "c"), later)
	k.ttl.observe(makeCritical(reg, "c", later.Add(10*time.Second)), later.Add(10*time.Second))
	k.sweep(ctx, later.Add(65*time.Second))
	if reg.Instance("ttl.rpc", "c") == nil {
		t.Fatal("an instance critical for 55 s of its one minute was removed")
	}
	k.sweep(ctx, later.Add(71*time.Second))
	if reg.Instance("ttl.rpc", "c") != nil {
		t.Fatal("an instance critical for 61 s of its one minute was kept")
	}
}

// TestTTLRenewedWhileTheSweepJudgesStaysPassing: a renewal that reaches the
// leader after a sweep has judged the instance's TTL expired, but before
// the sweep writes, wins: the instance is never marked critical. The
// renewal runs at the exact moment between the sweep's judgement and its
// write.
func TestTTLRenewedWhileTheSweepJudgesStaysPassing(t *testing.T) {
	reg := newFakeRegistry()
	t0 := time.Unix(1000, 0)
	clock := &fakeClock{now: t0}
	k := newTestKeeper(t, reg, clock)
	ctx := context.Background()
	const ttl = time.Minute
	reg.register(ttlInstance("t1", ttl))
	renewed := false
	k.ttl.judged = func() {
		if renewed {
			return
		}
		renewed = true
		if _, err := k.RenewTTL(ctx, "ttl.rpc", "t1"); err != nil {
			t.Errorf("renew: %v", err)
		}
	}
	startTTLs(k, t0) // starts the TTL
	clock.set(t0.Add(2 * ttl))
	k.sweep(ctx, t0.Add(2*ttl))
	if !renewed {
		t.Fatal("the sweep did not judge the TTL expired")
	}
	if h := reg.health("ttl.rpc", "t1"); h != pb.Health_PASSING {
		t.Fatalf("health after a renewal that beat the sweep's write = %v, want passing", h)
	}
	if w := reg.written(); len(w) != 0 {
		t.Fatalf("a sweep overtaken by a renewal wrote %v", w)
	}
	// Not renewed again: the next sweep past the deadline does expire it.
	k.sweep(ctx, t0.Add(4*ttl))
	if h := reg.health("ttl.rpc", "t1"); h != pb.Health_CRITICAL {
		t.Fatalf("health after the TTL ran out = %v, want critical", h)
	}
	// A renewal of a critical instance writes it passing again.
	if _, err := k.RenewTTL(ctx, "ttl.rpc", "t1"); err != nil {
		t.Fatal(err)
	}
	if h := reg.health("ttl.rpc", "t1"); h != pb.Health_PASSING {
		t.Fatalf("health after renewing a critical instance = %v, want passing", h)
	}
}

// TestSweepLeavesAnInstanceRegisteredAgainSinceItsJudgement: an instance
// registered again after a sweep judged it (its TTL ran out, or it was
// critical past deregister_critical_after) and before the sweep's write
// is a new version, which the verdict was not about: the write names the
// version judged, and the registry leaves the new one as it is.
func TestSweepLeavesAnInstanceRegisteredAgainSinceItsJudgement(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(reg *fakeRegistry, k *Keeper, t0 time.Time) time.Time // returns when to sweep
	}{
		{"expired TTL", func(reg *fakeRegistry, k *Keeper, t0 time.Time) time.Time {
			reg.register(ttlInstance("t1", 10*time.Second))
			startTTLs(k, t0)
			return t0.Add(11 * time.Second)
		}},
		{"critical past deregister_critical_after", func(reg *fakeRegistry, k *Keeper, t0 time.Time) time.Time {
			deregisterAfterInstances(reg, "t1")
			startTTLs(k, t0)
			k.ttl.observe(makeCritical(reg, "t1", t0), t0)
			return t0.Add(61 * time.Second)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newFakeRegistry()
			t0 := time.Unix(1000, 0)
			k := newTestKeeper(t, reg, &fakeClock{now: t0})
			at := tc.prepare(reg, k, t0)
			judgedRev := reg.Instance("ttl.rpc", "t1").ModRevision
			var again *pb.Instance
			k.ttl.judged = func() {
				if again == nil {
					again = reg.register(ttlInstance("t1", 10*time.Second))
				}
			}
			k.sweep(context.Background(), at)
			if again == nil {
				t.Fatal("the sweep judged nothing due")
			}
			w := reg.written()
			if len(w) != 1 {
				t.Fatalf("sweep wrote %v, want one entry about the version judged", w)
			}
			var ref *pb.InstanceRef
			if d := w[0].GetDeregister(); d != nil {
				ref = d
			} else if sh := w[0].GetSetHealth(); len(sh.GetInstances()) == 1 {
				ref = sh.Instances[0]
			}
			if ref == nil || ref.ModRevision != judgedRev {
				t.Fatalf("sweep wrote %v, want it conditional on mod_revision %d, the version judged", w[0], judgedRev)
			}
			cur := reg.Instance("ttl.rpc", "t1")
			if cur == nil || cur.ModRevision != again.ModRevision || cur.Health != pb.Health_PASSING {
				t.Fatalf("the registration made after the judgement is %v, want it kept as registered (mod_revision %d, passing)", cur, again.ModRevision)
			}
		})
	}
}

// TestTTLTrackerOrdersSweepsAndRenewals: a renewal before the tick's
// claim voids the tick's verdict; a renewal after it is told to wait for
// the tick's write, and is released when the write is done.
func TestTTLTrackerOrdersSweepsAndRenewals(t *testing.T) {
	reg := newFakeRegistry()
	a := reg.register(ttlInstance("a", time.Second))
	b := reg.register(ttlInstance("b", time.Second))
	tr := newTTLTracker()
	t0 := time.Unix(1000, 0)
	tr.observe(a, t0) // starts the TTLs
	tr.observe(b, t0)
	verdicts, reap := tr.judge(t0.Add(2*time.Second), reg, time.Second)
	if len(verdicts) != 2 || len(reap) != 0 {
		t.Fatalf("judged %v expired and %v for removal, want a and b expired", verdicts, reap)
	}
	if wait := tr.renew(a, t0.Add(2*time.Second)); wait != nil {
		t.Fatal("a renewal with no tick in flight was told to wait")
	}
	done := make(chan struct{})
	claimed := tr.claim(verdicts, done)
	if len(claimed) != 1 || claimed[0].Id != "b" {
		t.Fatalf("claimed %v, want only b (a was renewed after the verdict)", claimed)
	}
	wait := tr.renew(b, t0.Add(2*time.Second))
	if wait == nil {
		t.Fatal("a renewal during the tick's write was not told to wait")
	}
	select {
	case <-wait:
		t.Fatal("released before the tick's write was done")
	default:
	}
	tr.release(done)
	select {
	case <-wait:
	default:
		t.Fatal("not released after the tick's write")
	}
	if wait := tr.renew(b, t0.Add(3*time.Second)); wait != nil {
		t.Fatal("told to wait after the tick was done")
	}
}

// manyTTLInstances registers n TTL instances of ttl and starts their TTLs
// at t0.
func manyTTLInstances(t *testing.T, k *Keeper, reg *fakeRegistry, n int, ttl time.Duration, t0 time.Time) {
	t.Helper()
	for i := range n {
		reg.register(ttlInstance(fmt.Sprintf("i%06d", i), ttl))
	}
	startTTLs(k, t0)
}

// drainEvents hands the tracker every registry change after *rev, as the
// instance watch does on the leader.
func drainEvents(t *testing.T, k *Keeper, reg *fakeRegistry, rev *uint64) {
	t.Helper()
	w := reg.WatchInstances(*rev)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	for {
		resp, err := w.Next(ctx)
		if err != nil {
			*rev = reg.Revision()
			return
		}
		k.observeTTL(resp)
	}
}

// TestTTLTickLooksOnlyAtInstancesDue: with 100,000 TTL instances none of
// which is due, a tick examines none of them and writes nothing; when one
// instance's TTL runs out, the tick examines that one alone, marks it
// critical, and it is removed once critical past its
// deregister_critical_after, while the 100,000 others are left alone.
func TestTTLTickLooksOnlyAtInstancesDue(t *testing.T) {
	reg := newFakeRegistry()
	t0 := time.Unix(1000, 0)
	clock := &fakeClock{now: t0}
	reg.clock = clock
	k := newTestKeeper(t, reg, clock)
	ctx := context.Background()
	manyTTLInstances(t, k, reg, 100_000, time.Hour, t0)
	short := ttlInstance("short", 10*time.Second)
	short.Check.DeregisterCriticalAfter = durationpb.New(time.Minute)
	k.ttl.observe(reg.register(short), t0)
	rev := reg.Revision()

	k.sweep(ctx, t0.Add(5*time.Second))
	if n := k.ttl.examined; n != 0 {
		t.Fatalf("a tick with nothing due examined %d instances", n)
	}
	if w := reg.written(); len(w) != 0 {
		t.Fatalf("a tick with nothing due wrote %v", w)
	}

	clock.set(t0.Add(11 * time.Second))
	k.sweep(ctx, clock.Now())
	if n := k.ttl.examined; n != 1 {
		t.Fatalf("a tick with one instance due examined %d instances, want 1", n)
	}
	w := reg.written()
	if len(w) != 1 || len(w[0].GetSetHealth().GetInstances()) != 1 || w[0].GetSetHealth().Instances[0].Id != "short" ||
		w[0].GetSetHealth().Health != pb.Health_CRITICAL {
		t.Fatalf("the tick wrote %v, want SetHealth critical of ttl.rpc/short alone", w)
	}
	drainEvents(t, k, reg, &rev) // the leader sees its write

	clock.set(t0.Add(11*time.Second + 30*time.Second))
	k.sweep(ctx, clock.Now())
	if w := reg.written(); len(w) != 0 {
		t.Fatalf("critical for less than deregister_critical_after, the tick wrote %v", w)
	}
	clock.set(t0.Add(11*time.Second + 61*time.Second))
	k.sweep(ctx, clock.Now())
	if w := reg.written(); len(w) != 1 || w[0].GetDeregister().GetId() != "short" {
		t.Fatalf("critical past deregister_critical_after, the tick wrote %v, want the removal of ttl.rpc/short", w)
	}
	drainEvents(t, k, reg, &rev)
	if n := k.ttl.examined; n != 2 {
		t.Fatalf("ticks examined %d instances in all, want 2 (the one instance, when its TTL ran out and when its removal was due)", n)
	}
	if n := len(k.ttl.entries); n != 100_000 {
		t.Fatalf("the tracker holds %d deadlines, want the 100000 untouched ones", n)
	}
	for _, in := range reg.CheckedInstances() {
		if in.Health != pb.Health_PASSING {
			t.Fatalf("%s/%s is %v, want passing", in.Service, in.Id, in.Health)
		}
	}
}

// TestIdleTTLTickDoesNotAllocate: a tick with nothing due allocates
// nothing, however many instances have a TTL.
func TestIdleTTLTickDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	reg := newFakeRegistry()
	t0 := time.Unix(1000, 0)
	k := newTestKeeper(t, reg, &fakeClock{now: t0})
	manyTTLInstances(t, k, reg, 100_000, time.Hour, t0)
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() { k.sweep(ctx, t0.Add(time.Minute)) }); n != 0 {
		t.Fatalf("an idle tick allocated %v times", n)
	}
}

// TestRenewalMovesTheDeadline: an instance renewed before its TTL runs out
// is not due at its first deadline, only at the renewed one; a
// re-registration of an instance starts its TTL afresh.
func TestRenewalMovesTheDeadline(t *testing.T) {
	reg := newFakeRegistry()
	t0 := time.Unix(1000, 0)
	clock := &fakeClock{now: t0}
	k := newTestKeeper(t, reg, clock)
	ctx := context.Background()
	reg.register(ttlInstance("renewed", 10*time.Second))
	reg.register(ttlInstance("again", 10*time.Second))
	rev := reg.Revision()
	startTTLs(k, t0)
	clock.set(t0.Add(8 * time.Second))
	if _, err := k.RenewTTL(ctx, "ttl.rpc", "renewed"); err != nil {
		t.Fatal(err)
	}
	reg.register(ttlInstance("again", 10*time.Second))
	drainEvents(t, k, reg, &rev)
	k.sweep(ctx, t0.Add(12*time.Second))
	if w := reg.written(); len(w) != 0 {
		t.Fatalf("tick between the first and the renewed deadline wrote %v", w)
	}
	k.sweep(ctx, t0.Add(19*time.Second))
	w := reg.written()
	if len(w) != 1 || len(w[0].GetSetHealth().GetInstances()) != 2 {
		t.Fatalf("tick past both renewed deadlines wrote %v, want one SetHealth of both", w)
	}
}

// TestTTLLoopExpiresInstancesRegisteredWhileItRuns: instances registered
// after the leader's TTL loop has started watching the registry get a
// deadline, and one is written critical when its TTL runs out; a renewed
// one stays passing.
func TestTTLLoopExpiresInstancesRegisteredWhileItRuns(t *testing.T) {
	reg := newFakeRegistry()
	k := New(Config{Agent: "a1", Replica: reg, Writer: reg, Interval: 10 * time.Millisecond, Logger: testlog.New(t, "a1")})
	runLoop(t, k.RunTTLChecks)
	testwait.For(t, 10*time.Second, "the TTL loop to watch the registry", func() bool { return reg.watches.Load() > 0 })

	reg.register(ttlInstance("lapses", 200*time.Millisecond))
	reg.register(ttlInstance("renewed", 5*time.Second))
	ctx := t.Context()
	stop := make(chan struct{})
	renewing := make(chan struct{})
	go func() {
		defer close(renewing)
		for {
			if _, err := k.RenewTTL(ctx, "ttl.rpc", "renewed"); err != nil && ctx.Err() == nil {
				t.Errorf("renew: %v", err)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	testwait.For(t, 10*time.Second, "the lapsed instance to turn critical", func() bool {
		return reg.health("ttl.rpc", "lapses") == pb.Health_CRITICAL
	})
	close(stop)
	<-renewing
	if h := reg.health("ttl.rpc", "renewed"); h != pb.Health_PASSING {
		t.Fatalf("an instance renewed every 20 ms with a TTL of 5 s is %v", h)
	}
}

// TestHealthWatchStartsAgainAfterAFailure: when the registry watch fails,
// health starts a new one and lists the checked instances again, so a
// change made meanwhile is not missed.
func TestHealthWatchStartsAgainAfterAFailure(t *testing.T) {
	reg := newFakeRegistry()
	k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
	got := make(chan *pb.WatchResponse, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.followInstances(ctx, func(resp *pb.WatchResponse) { got <- resp })
	}()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)

	if first := <-got; !first.Snapshot || len(first.Events) != 0 {
		t.Fatalf("first answer %v, want the empty listing", first)
	}
	reg.failWatch.Store(true) // the watch fails instead of delivering this
	reg.register(ttlInstance("meanwhile", time.Minute))
	select {
	case again := <-got:
		if !again.Snapshot || len(again.Events) != 1 || again.Events[0].Instance.Id != "meanwhile" {
			t.Fatalf("after the failure: %v, want a listing with ttl.rpc/meanwhile", again)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no new listing after the watch failed")
	}
	if n := reg.watches.Load(); n != 2 {
		t.Fatalf("%d watches started, want 2", n)
	}
	if n := reg.openWatches.Load(); n != 1 {
		t.Fatalf("%d watches open after the restart, want 1 (the failed one closed)", n)
	}
	stop()
	if n := reg.openWatches.Load(); n != 0 {
		t.Fatalf("%d watches open after the keeper stopped, want 0", n)
	}
}

// TestAnAgentAliveAgainDoesNotRestartItsInstancesTTLs: an agent that was
// failed and is alive again has all its instances written passing; a TTL
// instance whose TTL ran out meanwhile expires at the next tick, and one
// whose TTL has not keeps its deadline, instead of both getting a new TTL.
func TestAnAgentAliveAgainDoesNotRestartItsInstancesTTLs(t *testing.T) {
	reg := newFakeRegistry()
	t0 := time.Unix(1000, 0)
	k := newTestKeeper(t, reg, &fakeClock{now: t0})
	reg.register(ttlInstance("short", 10*time.Second))
	reg.register(ttlInstance("long", time.Minute))
	startTTLs(k, t0)
	ctx := context.Background()
	nodeHealth := func(h pb.Health, output string, at time.Time) {
		t.Helper()
		cmd := &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: &pb.SetHealth{Health: h, Output: output,
			Instances: []*pb.InstanceRef{{Service: "ttl.rpc", Id: "short"}, {Service: "ttl.rpc", Id: "long"}}}}}
		if _, err := reg.apply(cmd); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"short", "long"} {
			k.ttl.observe(reg.Instance("ttl.rpc", id), at)
		}
	}
	nodeHealth(pb.Health_CRITICAL, "agent failed: no gossip contact", t0.Add(2*time.Second))
	nodeHealth(pb.Health_PASSING, AgentAliveAgain, t0.Add(30*time.Second))
	reg.written()

	k.sweep(ctx, t0.Add(31*time.Second))
	if h := reg.health("ttl.rpc", "short"); h != pb.Health_CRITICAL {
		t.Fatalf("the instance whose 10 s TTL ran out while its agent was failed is %v a second after the agent came back, want critical", h)
	}
	if h := reg.health("ttl.rpc", "long"); h != pb.Health_PASSING {
		t.Fatalf("the instance with 30 s of its TTL left is %v, want passing", h)
	}
	k.sweep(ctx, t0.Add(61*time.Second))
	if h := reg.health("ttl.rpc", "long"); h != pb.Health_CRITICAL {
		t.Fatalf("the instance not renewed for its whole TTL (60 s) is %v, want critical", h)
	}
}

// TestTTLDeadlinesMoveByTheTimeTheLeaderLost: time the leader did not run
// (stopped, paused, starved) moves every deadline as late: the renewals
// sent meanwhile wait unread in its sockets. An instance expires at its
// moved deadline, not before; a critical instance is removed as late.
func TestTTLDeadlinesMoveByTheTimeTheLeaderLost(t *testing.T) {
	reg := newFakeRegistry()
	t0 := time.Unix(1000, 0)
	clock := &fakeClock{now: t0}
	var lost time.Duration
	k := New(Config{Agent: "a1", Replica: reg, Writer: reg, Interval: time.Hour, Now: clock.Now,
		Lost: func() time.Duration { return lost }, Logger: testlog.New(t, "a1")})
	reg.register(ttlInstance("ttl", 10*time.Second))
	deregisterAfterInstances(reg, "critical")
	ctx := context.Background()
	startTTLs(k, t0)
	makeCritical(reg, "critical", t0)
	k.ttl.observe(reg.Instance("ttl.rpc", "critical"), t0) // removable at t0+1m

	since := stall.NewSince(k.cfg.Lost)
	lost = 5 * time.Second // stopped from t0+8s to t0+13s
	k.catchUp(since)
	k.sweep(ctx, t0.Add(13*time.Second))
	if w := reg.written(); len(w) != 0 {
		t.Fatalf("a sweep after the leader lost 5 s wrote %v; the TTL's deadline is t0+15s", w)
	}
	k.catchUp(since) // nothing lost since: the deadline stays at t0+15s
	k.sweep(ctx, t0.Add(15*time.Second+time.Millisecond))
	w := reg.written()
	if len(w) != 1 || w[0].GetSetHealth().GetInstances()[0].GetId() != "ttl" {
		t.Fatalf("a sweep past the moved deadline wrote %v, want ttl.rpc/ttl critical", w)
	}
	k.sweep(ctx, t0.Add(time.Minute+time.Second))
	if h := reg.health("ttl.rpc", "critical"); h != pb.Health_CRITICAL {
		t.Fatalf("ttl.rpc/critical is %v one minute after it turned critical, with 5 s lost; want it kept", h)
	}
	k.sweep(ctx, t0.Add(time.Minute+5*time.Second+time.Millisecond))
	if reg.Instance("ttl.rpc", "critical") != nil {
		t.Fatal("ttl.rpc/critical is still registered past its moved deregister_critical_after")
	}
}

// TestTTLLoopMovesDeadlinesByTheTimeLost: the leader's TTL loop, woken by
// a deadline, first moves the deadlines by the time the agent lost.
func TestTTLLoopMovesDeadlinesByTheTimeLost(t *testing.T) {
	reg := newFakeRegistry()
	var lost atomic.Int64
	k := New(Config{Agent: "a1", Replica: reg, Writer: reg, Interval: 10 * time.Millisecond,
		Lost: func() time.Duration { return time.Duration(lost.Load()) }, Logger: testlog.New(t, "a1")})
	runLoop(t, k.RunTTLChecks)
	testwait.For(t, 10*time.Second, "the TTL loop to watch the registry", func() bool { return reg.watches.Load() > 0 })
	start := time.Now()
	lost.Store(int64(time.Hour)) // the agent was stopped for an hour
	reg.register(ttlInstance("waits", 200*time.Millisecond))
	testwait.For(t, 10*time.Second, "the deadline to move by the hour lost", func() bool {
		d, _ := k.ttl.next()
		return d.After(start.Add(time.Hour))
	})
	if h := reg.health("ttl.rpc", "waits"); h != pb.Health_PASSING {
		t.Fatalf("an instance whose leader lost an hour within its TTL is %v", h)
	}
}

// TestTTLTrackerForgetsAnInstanceRemovedUnseen: an instance removed
// without a DELETE event (the watch fell behind and listed the registry
// again) leaves nothing of it in the leader's tracker once its deadline
// finds it gone.
func TestTTLTrackerForgetsAnInstanceRemovedUnseen(t *testing.T) {
	reg := newFakeRegistry()
	t0 := time.Unix(1000, 0)
	k := newTestKeeper(t, reg, &fakeClock{now: t0})
	reg.register(ttlInstance("gone", 10*time.Second))
	startTTLs(k, t0)
	reg.mu.Lock()
	delete(reg.insts, instanceKey{"ttl.rpc", "gone"})
	reg.mu.Unlock()

	k.sweep(context.Background(), t0.Add(11*time.Second))
	k.ttl.mu.Lock()
	defer k.ttl.mu.Unlock()
	if len(k.ttl.entries) != 0 || len(k.ttl.due) != 0 || len(k.ttl.started) != 0 || len(k.ttl.critical) != 0 {
		t.Fatalf("the tracker keeps %d deadlines, %d in its heap, %d TTL starts and %d critical spells of a removed instance",
			len(k.ttl.entries), len(k.ttl.due), len(k.ttl.started), len(k.ttl.critical))
	}
}

// holdingWriter writes to reg, holding each Deregister until release is
// closed; entered gets a value as one begins.
type holdingWriter struct {
	*fakeRegistry
	entered chan struct{}
	release chan struct{}
}

func (w *holdingWriter) ApplyLocal(ctx context.Context, cmd *pb.Command) (uint64, error) {
	if cmd.GetDeregister() != nil {
		w.entered <- struct{}{}
		<-w.release
	}
	return w.fakeRegistry.ApplyLocal(ctx, cmd)
}

// TestRenewalWaitsOnlyForItsOwnInstancesWrite: a tick that expires one
// instance and removes others (critical past deregister_critical_after),
// one Raft entry each, releases the expired instance once its entry is
// written: its renewal does not wait for the removals.
func TestRenewalWaitsOnlyForItsOwnInstancesWrite(t *testing.T) {
	reg := newFakeRegistry()
	w := &holdingWriter{fakeRegistry: reg, entered: make(chan struct{}, 1), release: make(chan struct{})}
	t0 := time.Unix(1000, 0)
	k := New(Config{Agent: "a1", Replica: reg, Writer: w, Interval: time.Hour, Now: (&fakeClock{now: t0}).Now, Logger: testlog.New(t, "a1")})
	reg.register(ttlInstance("lapsed", 10*time.Second))
	deregisterAfterInstances(reg, "long1", "long2")
	startTTLs(k, t0)
	for _, id := range []string{"long1", "long2"} {
		k.ttl.observe(makeCritical(reg, id, t0), t0)
	}
	k.ttl.observe(reg.Instance("ttl.rpc", "lapsed"), t0.Add(55*time.Second)) // renewed then

	swept := make(chan struct{})
	go func() {
		defer close(swept)
		k.sweep(context.Background(), t0.Add(66*time.Second))
	}()
	defer func() { close(w.release); <-swept }()
	<-w.entered // the lapsed instance is written critical; a removal is being written
	if h := reg.health("ttl.rpc", "lapsed"); h != pb.Health_CRITICAL {
		t.Fatalf("the lapsed instance is %v while the tick removes others, want critical", h)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := k.RenewTTL(ctx, "ttl.rpc", "lapsed"); err != nil {
		t.Fatalf("renewal of the expired instance while the tick removes others: %v", err)
	}
	if h := reg.health("ttl.rpc", "lapsed"); h != pb.Health_PASSING {
		t.Fatalf("the renewed instance is %v, want passing", h)
	}
}

// TestSweepStopsRemovingWhenLeadershipEnds: a tick whose leadership ends
// while it removes instances critical past deregister_critical_after
// tries no more of them (each would fail, and log so).
func TestSweepStopsRemovingWhenLeadershipEnds(t *testing.T) {
	reg := newFakeRegistry()
	t0 := time.Unix(1000, 0)
	k := newTestKeeper(t, reg, &fakeClock{now: t0})
	deregisterAfterInstances(reg, "long1", "long2", "long3")
	startTTLs(k, t0)
	for _, id := range []string{"long1", "long2", "long3"} {
		k.ttl.observe(makeCritical(reg, id, t0), t0)
	}
	reg.written()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	k.sweep(ctx, t0.Add(2*time.Minute))
	if w := reg.written(); len(w) != 0 {
		t.Fatalf("a tick whose leadership had ended wrote %v", w)
	}
}

// TestRenewalOnALeaderStillCatchingUpIsRetried: a new leader that has
// not applied what its predecessor committed may lack a registration
// already acknowledged; its renewal answers "no leader" (which the
// forwarding retries), not "not found", and goes through once it has.
func TestRenewalOnALeaderStillCatchingUpIsRetried(t *testing.T) {
	reg := newFakeRegistry()
	clock := &fakeClock{now: time.Unix(1000, 0)}
	var ready atomic.Bool
	k := New(Config{Agent: "a1", Replica: reg, Writer: reg, Interval: time.Hour, Now: clock.Now, LeaderReady: ready.Load, Logger: testlog.New(t, "a1")})
	_, err := k.RenewTTL(context.Background(), "ttl.rpc", "acked")
	if !errors.Is(err, apierr.ErrNoLeader) || errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("renewal on a leader still catching up: %v, want no leader (retried), not not found", err)
	}
	reg.register(ttlInstance("acked", 10*time.Second)) // the registration, applied by the barrier
	ready.Store(true)
	startTTLs(k, clock.Now())
	if _, err := k.RenewTTL(context.Background(), "ttl.rpc", "acked"); err != nil {
		t.Fatalf("renewal once caught up: %v", err)
	}
}
