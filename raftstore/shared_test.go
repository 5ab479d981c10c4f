package raftstore

import (
	"bytes"
	"io"
	"testing"
	"time"
	"unsafe"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// sameString reports whether a and b are one string in memory.
func sameString(a, b string) bool {
	return len(a) == len(b) && unsafe.StringData(a) == unsafe.StringData(b)
}

// Stored instances registered alike share one check, one tag list and
// one copy of their names, after a register and after a restore; each
// still reads as registered, and changing one leaves the other as it was.
func TestFSMInstancesShareWhatTheyHoldAlike(t *testing.T) {
	d := newFSMDriver(t, 16)
	for _, id := range []string{"1", "2"} {
		inst := testInstance("api", id, "n1")
		inst.Tags = []string{"primary", "canary"}
		inst.Metadata = map[string]string{"region": "eu-" + id}
		inst.Check = &pb.Check{Ttl: durationpb.New(time.Minute)}
		d.mustApply(registerCmd(inst))
	}
	check := func(f *FSM) {
		t.Helper()
		a, b := f.Instance("api", "1"), f.Instance("api", "2")
		if a.Check == nil || a.Check != b.Check {
			t.Errorf("the instances hold checks %p and %p, want one shared", a.Check, b.Check)
		}
		if &a.Tags[0] != &b.Tags[0] || cap(a.Tags) != len(a.Tags) {
			t.Errorf("the instances hold two tag lists (or one with room to append into)")
		}
		if !sameString(a.Service, b.Service) || !sameString(a.Zone, b.Zone) || !sameString(a.Node, b.Node) {
			t.Errorf("the instances hold their names twice")
		}
		for k := range a.Metadata {
			for k2 := range b.Metadata {
				if !sameString(k, k2) {
					t.Errorf("metadata key %q is held twice", k)
				}
			}
		}
		if !proto.Equal(a.Check, &pb.Check{Ttl: durationpb.New(time.Minute)}) || a.Tags[1] != "canary" || a.Metadata["region"] != "eu-1" || b.Metadata["region"] != "eu-2" {
			t.Errorf("stored instances read %v and %v", a, b)
		}
	}
	check(d.fsm)

	g := NewFSM(16)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, d.fsm)))); err != nil {
		t.Fatal(err)
	}
	check(g)

	d.mustApply(setHealthCmd(pb.Health_CRITICAL, "down", instRef("api", "1")))
	if got := d.fsm.Instance("api", "2"); got.Health == pb.Health_CRITICAL || got.Check != d.fsm.Instance("api", "1").Check {
		t.Errorf("after a health change of api/1, api/2 reads %v", got)
	}
}
