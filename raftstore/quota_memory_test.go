package raftstore

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"testing"

	"github.com/hashicorp/raft"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// registryShapes are the registries BenchmarkFSMHeapPerInstance and
// TestFSMQuotaBoundsTheRegistrysHeap load: the smallest instance the API
// accepts and a typical one (benchutil's ~200 bytes), 100 or 16 to a
// service or each in a service of its own (the registry then holds a map
// per service).
var registryShapes = []struct {
	name       string
	perService int
	instance   func(i int) *pb.Instance
}{
	{"tiny/100-per-service", 100, tinyInstance},
	{"tiny/1-per-service", 1, tinyInstance},
	{"tiny/16-per-service", 16, tinyInstance},
	{"typical/100-per-service", 100, typicalInstance},
	{"typical/1-per-service", 1, typicalInstance},
}

// tinyInstance is about the smallest registration: a short service name,
// id, node and address.
func tinyInstance(i int) *pb.Instance {
	return &pb.Instance{Id: strconv.Itoa(i), Node: "n1", Address: "10.0.0.1:1"}
}

// typicalInstance is a registration of about 200 bytes, as
// internal/benchutil's.
func typicalInstance(i int) *pb.Instance {
	return &pb.Instance{
		Id: fmt.Sprintf("instance-%08d", i), Node: "n1", Address: "10.1.2.3:9001",
		Zone: "zone-a", Version: "v1.2.3", Tags: []string{"primary", "canary"},
		Metadata: map[string]string{"region": "eu-west", "build": "2026-11-25T10:00:00Z", "owner": "team-users"},
		Health:   pb.Health_PASSING,
	}
}

// loadShape registers n instances of a shape into a fresh FSM whose
// watch ring keeps one event (the ring is bounded on its own, whatever
// the registry holds) and whose entries carry no request id.
func loadShape(tb testing.TB, n, perService int, instance func(int) *pb.Instance) *FSM {
	d := newFSMDriver(tb, 1)
	logs := make([]*raft.Log, 0, 64)
	for i := range n {
		inst := instance(i)
		inst.Service = fmt.Sprintf("s%d", i/perService)
		logs = append(logs, d.nextLog(registerCmd(inst)))
		if len(logs) == cap(logs) || i == n-1 {
			for _, resp := range d.fsm.ApplyBatch(logs) {
				if err := responseError(tb, resp); err != nil {
					tb.Fatal(err)
				}
			}
			logs = logs[:0]
		}
	}
	return d.fsm
}

// BenchmarkFSMHeapPerInstance measures what max_registry_bytes must
// bound: the live heap a registry of 100,000 instances holds per instance
// (heap-B/instance), its encoded bytes per instance (enc-B/instance) and
// the heap per byte the quota counts (heap/quota-B), for small and
// typical instances, 100 to a service or one each.
//
//	go test -run '^$' -bench FSMHeapPerInstance -benchtime 1x ./raftstore/
func BenchmarkFSMHeapPerInstance(b *testing.B) {
	const n = 100_000
	for _, shape := range registryShapes {
		b.Run(shape.name, func(b *testing.B) {
			for range b.N {
				before := liveHeap()
				f := loadShape(b, n, shape.perService, shape.instance)
				after := liveHeap()
				enc := encodedBytes(f)
				b.ReportMetric(float64(after-before)/n, "heap-B/instance")
				b.ReportMetric(float64(enc)/n, "enc-B/instance")
				b.ReportMetric(float64(after-before)/float64(f.RegistryBytes()), "heap/quota-B")
				runtime.KeepAlive(f)
			}
		})
	}
}

// liveHeap is the bytes of live heap objects after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// encodedBytes is the encoded size of f's instances.
func encodedBytes(f *FSM) int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var n int64
	for _, byID := range f.services {
		for _, st := range byID {
			n += int64(len(st.enc))
		}
	}
	return n
}

// A registry filled to max_registry_bytes holds about as many bytes of
// live heap as the limit, whatever the size of its instances and their
// number per service.
func TestFSMQuotaBoundsTheRegistrysHeap(t *testing.T) {
	const limit = 8 << 20
	for _, shape := range registryShapes {
		t.Run(shape.name, func(t *testing.T) {
			before := liveHeap()
			f := fillToQuota(t, limit, shape.perService, shape.instance)
			heap := int64(liveHeap()) - int64(before)
			t.Logf("%d instances: %d bytes of heap, %.2f per byte counted", f.InstanceCount(), heap, float64(heap)/float64(f.RegistryBytes()))
			if heap > 2*limit {
				t.Errorf("a registry of %d instances at its limit of %d bytes holds %d bytes of heap, more than twice the limit",
					f.InstanceCount(), limit, heap)
			}
			runtime.KeepAlive(f)
		})
	}
}

// fillToQuota registers instances of a shape until the registry refuses
// one for its size.
func fillToQuota(t *testing.T, limit uint64, perService int, instance func(int) *pb.Instance) *FSM {
	d := newFSMDriver(t, 1)
	for i := 0; ; i++ {
		inst := instance(i)
		inst.Service = fmt.Sprintf("s%d", i/perService)
		cmd := registerCmd(inst)
		cmd.Quota = &pb.Quota{RegistryOverheads: true, MaxRegistryBytes: limit}
		if _, err := d.apply(cmd); err != nil {
			if !errors.Is(err, ErrQuotaExceeded) {
				t.Fatalf("registration %d: %v", i, err)
			}
			return d.fsm
		}
	}
}

// TestFSMServiceScaledDownGivesBackItsMemory: a service that held
// thousands of instances and is scaled down to a few holds the memory
// of a few (a Go map keeps the room it grew to; the state machine makes
// it again), and its instances stay as they were.
func TestFSMServiceScaledDownGivesBackItsMemory(t *testing.T) {
	d := newFSMDriver(t, 64)
	const n, left = 8 * shrinkFrom, 16
	before := liveHeap()
	for i := range n {
		d.mustApply(registerCmd(tinyInstanceOf("api", i)))
	}
	full := int64(liveHeap()) - int64(before)
	for i := left; i < n; i++ {
		d.mustApply(deregisterCmd("api", tinyInstanceOf("api", i).Id))
	}
	after := int64(liveHeap()) - int64(before)
	if after > full/4 {
		t.Errorf("%d instances held %d bytes; scaled down to %d they hold %d, want at most a quarter", n, full, left, after)
	}
	got, _ := d.fsm.Instances("api")
	if len(got) != left {
		t.Fatalf("%d instances left, want %d", len(got), left)
	}
	for i, in := range got {
		if want := tinyInstanceOf("api", i); in.Id != want.Id || in.Address != want.Address {
			t.Fatalf("instance %d after the scale-down: %v, want %v", i, in, want)
		}
	}
	checkQuotaCounts(t, "after the scale-down", d.fsm)
}

// tinyInstanceOf is tinyInstance(i) of service, its id sorting as i does.
func tinyInstanceOf(service string, i int) *pb.Instance {
	in := tinyInstance(i)
	in.Service, in.Id = service, fmt.Sprintf("%06d", i)
	return in
}
