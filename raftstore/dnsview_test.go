package raftstore

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// TestFSMPassingInstancesDecodesOnlyThePassingOnes: DNS reads a service's
// passing instances, with the fields its answers show, and whether the
// service has instances at all.
func TestFSMPassingInstancesDecodesOnlyThePassingOnes(t *testing.T) {
	d := newFSMDriver(t, 64)
	for _, id := range []string{"1", "2", "3"} {
		inst := testInstance("user.rpc", id, "n1")
		inst.Check = &pb.Check{Ttl: durationpb.New(time.Minute)}
		d.mustApply(registerCmd(inst))
	}
	crit := testInstance("down.rpc", "9", "n1")
	crit.Health = pb.Health_CRITICAL
	d.mustApply(registerCmd(crit))
	d.mustApply(setHealthCmd(pb.Health_CRITICAL, "connection refused", instRef("user.rpc", "2")))
	d.mustApply(setHealthCmd(pb.Health_PASSING, "ok", instRef("user.rpc", "3")))

	passing, known, rev := d.fsm.PassingInstances("user.rpc")
	if !known || rev != d.fsm.Revision() {
		t.Fatalf("user.rpc: known %v at revision %d, want known at %d", known, rev, d.fsm.Revision())
	}
	var ids []string
	for _, inst := range passing {
		ids = append(ids, inst.Id)
		if inst.Address != "10.0.0.1:"+inst.Id || inst.Weight != 100 || inst.Zone != "z1" || !slices.Equal(inst.Tags, []string{"blue", "canary"}) || inst.Health != pb.Health_PASSING {
			t.Errorf("instance %s lacks a field DNS answers show: %v", inst.Id, inst)
		}
		if inst.Metadata != nil || inst.Check != nil || inst.HealthOutput != "" {
			t.Errorf("instance %s decoded with fields DNS never shows: %v", inst.Id, inst)
		}
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"1", "3"}) {
		t.Fatalf("passing instances of user.rpc: %q, want 1 and 3", ids)
	}
	if passing, known, _ := d.fsm.PassingInstances("down.rpc"); len(passing) != 0 || !known {
		t.Fatalf("a service of critical instances: %d passing, known %v; want none, known", len(passing), known)
	}
	if passing, known, _ := d.fsm.PassingInstances("nosuch.rpc"); len(passing) != 0 || known {
		t.Fatalf("an unknown service: %d passing, known %v; want none, unknown", len(passing), known)
	}
	for service, want := range map[string]bool{"user.rpc": true, "down.rpc": true, "nosuch.rpc": false, "User.rpc": false} {
		if got := d.fsm.HasInstances(service); got != want {
			t.Errorf("HasInstances(%q) = %v, want %v", service, got, want)
		}
	}
}
