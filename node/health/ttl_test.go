package health

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

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

	k.sweep(ctx, t0) // starts both TTLs
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
}

// TestSweepRemovesInstanceCriticalPastDeregisterAfter: an instance critical
// for longer than its deregister_critical_after is deregistered; one
// critical for less is kept.
func TestSweepRemovesInstanceCriticalPastDeregisterAfter(t *testing.T) {
	reg := newFakeRegistry()
	t0 := time.Unix(1000, 0)
	k := newTestKeeper(t, reg, &fakeClock{now: t0})
	for _, id := range []string{"long", "short"} {
		in := ttlInstance(id, 10*time.Second)
		in.Check.DeregisterCriticalAfter = durationpb.New(time.Minute)
		reg.register(in)
	}
	reg.insts[instanceKey{"ttl.rpc", "long"}].Health = pb.Health_CRITICAL
	reg.insts[instanceKey{"ttl.rpc", "long"}].HealthSince = t0.Add(-2 * time.Minute).UnixNano()
	reg.insts[instanceKey{"ttl.rpc", "short"}].Health = pb.Health_CRITICAL
	reg.insts[instanceKey{"ttl.rpc", "short"}].HealthSince = t0.Add(-30 * time.Second).UnixNano()

	k.sweep(context.Background(), t0)
	w := reg.written()
	if len(w) != 1 || w[0].GetDeregister().GetId() != "long" {
		t.Fatalf("sweep wrote %v, want one Deregister of ttl.rpc/long", w)
	}
	if reg.Instance("ttl.rpc", "short") == nil {
		t.Fatal("an instance critical for less than deregister_critical_after was removed")
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
	k.sweep(ctx, t0) // starts the TTL
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

// TestTTLTrackerOrdersSweepsAndRenewals: a renewal before the sweep's
// claim voids the sweep's verdict; a renewal after it is told to wait for
// the sweep's write, and is released when the write is done.
func TestTTLTrackerOrdersSweepsAndRenewals(t *testing.T) {
	tr := newTTLTracker()
	a := &pb.Instance{Service: "ttl.rpc", Id: "a", ModRevision: 7, Health: pb.Health_PASSING, Check: &pb.Check{Ttl: durationpb.New(time.Second)}}
	b := &pb.Instance{Service: "ttl.rpc", Id: "b", ModRevision: 8, Health: pb.Health_PASSING, Check: &pb.Check{Ttl: durationpb.New(time.Second)}}
	t0 := time.Unix(1000, 0)
	var verdicts []verdict
	for _, in := range []*pb.Instance{a, b} {
		tr.expired(in, t0) // starts the TTL
		ok, gen := tr.expired(in, t0.Add(2*time.Second))
		if !ok {
			t.Fatalf("%s not expired two TTLs on", in.Id)
		}
		verdicts = append(verdicts, verdict{in, gen})
	}
	if wait := tr.renew(a, t0.Add(2*time.Second)); wait != nil {
		t.Fatal("a renewal with no sweep in flight was told to wait")
	}
	done := make(chan struct{})
	claimed := tr.claim(verdicts, done)
	if len(claimed) != 1 || claimed[0].Id != "b" {
		t.Fatalf("claimed %v, want only b (a was renewed after the verdict)", claimed)
	}
	wait := tr.renew(b, t0.Add(2*time.Second))
	if wait == nil {
		t.Fatal("a renewal during the sweep's write was not told to wait")
	}
	select {
	case <-wait:
		t.Fatal("released before the sweep's write was done")
	default:
	}
	tr.release(done)
	select {
	case <-wait:
	default:
		t.Fatal("not released after the sweep's write")
	}
	if wait := tr.renew(b, t0.Add(3*time.Second)); wait != nil {
		t.Fatal("told to wait after the sweep was done")
	}
}
