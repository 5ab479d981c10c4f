package raftstore

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"
	"unsafe"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// randomInstance is an instance of service with every field given a random
// value (some left empty), revisions and health_since included: what the
// FSM stores beyond what it sets itself.
func randomInstance(r *rand.Rand, service, id string) *pb.Instance {
	word := func() string {
		if r.IntN(5) == 0 {
			return ""
		}
		return fmt.Sprintf("w%d-é", r.IntN(1000))
	}
	inst := &pb.Instance{
		Id: id, Service: service, Node: word(), Address: word(),
		Weight: r.Uint32(), Zone: word(), Version: word(),
		Health:       pb.Health(r.IntN(4)),
		HealthOutput: word(),
	}
	for range r.IntN(4) {
		inst.Tags = append(inst.Tags, word())
	}
	if n := r.IntN(4); n > 0 {
		inst.Metadata = make(map[string]string, n)
		for range n {
			inst.Metadata[fmt.Sprintf("k%d", r.IntN(100))] = word()
		}
	}
	switch r.IntN(3) {
	case 1:
		inst.Check = &pb.Check{Ttl: durationpb.New(time.Duration(r.IntN(100)+1) * time.Second)}
	case 2:
		inst.Check = &pb.Check{Grpc: true, GrpcAddress: "127.0.0.1:1", Interval: durationpb.New(time.Second),
			DeregisterCriticalAfter: durationpb.New(time.Minute)}
	}
	return inst
}

// Every field of a registered instance reads back as registered, through
// the compact stored form: after the register, from the queries, from a
// watch's snapshot and after a snapshot restore.
func TestStoredInstanceDecodesToTheRegisteredOne(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	d := newFSMDriver(t, 1024)
	want := make(map[string]*pb.Instance)
	for i := range 300 {
		service := fmt.Sprintf("svc-%d", i%7)
		inst := randomInstance(r, service, fmt.Sprintf("i%03d", i))
		rev := d.mustApply(registerCmd(proto.Clone(inst).(*pb.Instance)))
		inst.CreateRevision, inst.ModRevision, inst.HealthSince = rev, rev, int64(rev)*1000
		want[service+"/"+inst.Id] = inst
	}
	check := func(what string, got []*pb.Instance) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d instances, want %d", what, len(got), len(want))
		}
		for _, g := range got {
			if w := want[g.Service+"/"+g.Id]; !proto.Equal(w, g) {
				t.Fatalf("%s: %s/%s reads\n  {%v}, registered\n  {%v}", what, g.Service, g.Id, compactText(g), compactText(w))
			}
		}
	}
	all, _ := d.fsm.AllInstances()
	check("AllInstances", all)
	var one []*pb.Instance
	for _, w := range want {
		one = append(one, d.fsm.Instance(w.Service, w.Id))
	}
	check("Instance", one)
	check("a watch's snapshot", watchSnapshot(t, d.fsm))

	g := NewFSM(16)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, d.fsm)))); err != nil {
		t.Fatal(err)
	}
	all, _ = g.AllInstances()
	check("after a restore", all)
	if g.RegistryBytes() != d.fsm.RegistryBytes() {
		t.Errorf("registry bytes %d after a restore, %d before", g.RegistryBytes(), d.fsm.RegistryBytes())
	}
	size := int64(7 * serviceOverheadBytes)
	for _, w := range want {
		size += int64(proto.Size(w)) + instanceOverheadBytes
	}
	if got := d.fsm.RegistryBytes(); got != size {
		t.Errorf("registry bytes %d, want the instances' encoded size and overheads %d", got, size)
	}
}

// watchSnapshot returns every instance of a watch's snapshot of f.
func watchSnapshot(t *testing.T, f *FSM) []*pb.Instance {
	t.Helper()
	w := f.Watch("", 0)
	defer w.Close()
	var out []*pb.Instance
	for {
		resp, err := w.Next(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.Events {
			out = append(out, e.Instance)
		}
		if !resp.More {
			return out
		}
	}
}

// A reader may change what it was given: the registry stays as it was.
func TestChangingAReadInstanceLeavesTheRegistryAsItWas(t *testing.T) {
	d := newFSMDriver(t, 16)
	d.mustApply(registerCmd(testInstance("api", "1", "n1")))
	got := d.fsm.Instance("api", "1")
	got.Health, got.Metadata["owner"], got.Tags[0] = pb.Health_CRITICAL, "someone else", "red"
	list, _ := d.fsm.Instances("api")
	list[0].Address = "elsewhere"
	again := d.fsm.Instance("api", "1")
	if again.Health != pb.Health_PASSING || again.Metadata["owner"] != "team-api" || again.Tags[0] != "blue" || again.Address != "10.0.0.1:1" {
		t.Errorf("the registry reads %v after a reader changed its copy", again)
	}
}

// sameString reports whether a and b are one string in memory.
func sameString(a, b string) bool {
	return len(a) == len(b) && unsafe.StringData(a) == unsafe.StringData(b)
}

// Stored instances of one service, node and session hold one copy of
// those names, after a register and after a restore.
func TestStoredInstancesShareTheirNames(t *testing.T) {
	d := newFSMDriver(t, 16)
	d.mustApply(sessionCreateCmd("s1", "n1"))
	for _, id := range []string{"1", "2"} {
		d.mustApply(registerCmd(withSession(testInstance("api", id, "n1"), "s1")))
	}
	check := func(f *FSM) {
		t.Helper()
		a, b := f.services["api"]["1"], f.services["api"]["2"]
		if !sameString(a.node, b.node) || !sameString(a.session, b.session) || a.node != "n1" || a.session != "s1" {
			t.Errorf("the instances hold node %q/%q and session %q/%q, want one copy of n1 and s1", a.node, b.node, a.session, b.session)
		}
	}
	check(d.fsm)
	g := NewFSM(16)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, d.fsm)))); err != nil {
		t.Fatal(err)
	}
	check(g)
}

// A watch snapshot's events that carry their instances encoded encode
// to the same bytes, and decode to the same events, as those that carry
// them decoded.
func TestEncodedSnapshotEventsAreTheDecodedOnesOnTheWire(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	d := newFSMDriver(t, 1024)
	for i := range 200 {
		d.mustApply(registerCmd(randomInstance(r, fmt.Sprintf("svc-%d", i%5), fmt.Sprintf("i%03d", i))))
	}
	d.mustApply(setHealthCmd(pb.Health_CRITICAL, "down", instRef("svc-1", "i001")))
	pages := func(encoded bool) []*pb.WatchResponse {
		w := d.fsm.Watch("", 0)
		defer w.Close()
		if encoded {
			w.EncodeSnapshots()
		}
		var out []*pb.WatchResponse
		for {
			resp, err := w.Next(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, resp)
			if !resp.More {
				return out
			}
		}
	}
	plain, encoded := pages(false), pages(true)
	if len(plain) != len(encoded) {
		t.Fatalf("%d pages decoded, %d encoded", len(plain), len(encoded))
	}
	for i := range plain {
		if encoded[i].Events[0].Instance != nil {
			t.Fatalf("page %d: an encoded event carries a decoded instance", i)
		}
		a, err := proto.MarshalOptions{Deterministic: true}.Marshal(plain[i])
		if err != nil {
			t.Fatal(err)
		}
		b, err := proto.Marshal(encoded[i])
		if err != nil {
			t.Fatal(err)
		}
		var got pb.WatchResponse
		if err := proto.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if len(a) != len(b) || !proto.Equal(&got, plain[i]) {
			t.Fatalf("page %d: encoded events are %d bytes and decode to\n  {%v}\nwant %d bytes of\n  {%v}", i, len(b), compactText(&got), len(a), compactText(plain[i]))
		}
	}
}

// Instances listed for health checks hold one message per distinct check
// and no tags or metadata.
func TestCheckedInstancesShareEqualChecksAndLeaveOutTagsAndMetadata(t *testing.T) {
	d := newFSMDriver(t, 16)
	for i := range 6 {
		inst := testInstance("api", fmt.Sprint(i), "n1")
		inst.Check = &pb.Check{Ttl: durationpb.New(time.Duration(10+i%2) * time.Second)}
		d.mustApply(registerCmd(inst))
	}
	checks := make(map[*pb.Check]bool)
	for _, inst := range d.fsm.CheckedInstances() {
		checks[inst.Check] = true
		if inst.Tags != nil || inst.Metadata != nil || inst.Address == "" {
			t.Errorf("listed %v, want it without tags and metadata, with the rest", compactText(inst))
		}
	}
	if len(checks) != 2 {
		t.Errorf("6 instances of 2 distinct checks hold %d check messages, want 2", len(checks))
	}
}
