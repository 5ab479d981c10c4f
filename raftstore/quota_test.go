package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// recount computes the quota counts from the FSM's instances: their
// encoded size and the overhead of each instance and service, and the
// instances of each session.
func recount(f *FSM) (bytes int64, bySession map[string]int) {
	bySession = map[string]int{}
	services := map[string]bool{}
	insts, _ := f.AllInstances()
	for _, inst := range insts {
		bytes += int64(proto.Size(inst)) + instanceOverheadBytes
		if !services[inst.Service] {
			services[inst.Service] = true
			bytes += serviceOverheadBytes
		}
		if inst.Session != "" {
			bySession[inst.Session]++
		}
	}
	return bytes, bySession
}

func checkQuotaCounts(t *testing.T, what string, f *FSM) {
	t.Helper()
	b, s := recount(f)
	if got := f.RegistryBytes(); got != b {
		t.Errorf("%s: RegistryBytes = %d, the instances hold %d", what, got, b)
	}
	if fmt.Sprint(f.quota.bySession) != fmt.Sprint(s) {
		t.Errorf("%s: instances per session = %v, the instances say %v", what, f.quota.bySession, s)
	}
}

func TestFSMQuotaCountsFollowEveryChangeAndRestore(t *testing.T) {
	d := populatedFSM(t)
	checkQuotaCounts(t, "populated", d.fsm)
	d.mustApply(registerCmd(withSession(testInstance("api", "0", "n1"), "s2"))) // moves to another session
	d.mustApply(setHealthCmd(pb.Health_CRITICAL, strings.Repeat("o", 300), instRef("db", "1")))
	d.mustApply(deregisterCmd("cache", "2"))
	checkQuotaCounts(t, "after updates", d.fsm)
	d.mustApply(sessionDestroyCmd("s1"))
	d.mustApply(nodeRemoveCmd("n2"))
	checkQuotaCounts(t, "after removals", d.fsm)

	g := NewFSM(16)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, d.fsm)))); err != nil {
		t.Fatal(err)
	}
	checkQuotaCounts(t, "restored", g)
	if g.RegistryBytes() != d.fsm.RegistryBytes() {
		t.Errorf("restored RegistryBytes = %d, want %d", g.RegistryBytes(), d.fsm.RegistryBytes())
	}
}

func TestFSMQuotaRefusesRegistrationsPastEachLimit(t *testing.T) {
	withQuota := func(inst *pb.Instance, q *pb.Quota) *pb.Command {
		cmd := registerCmd(inst)
		cmd.Quota = q
		return cmd
	}
	tests := []struct {
		name  string
		quota *pb.Quota
		fill  []*pb.Instance // registered first, under the quota
		next  *pb.Instance   // refused
		key   string
	}{
		{"instances per service", &pb.Quota{MaxInstancesPerService: 2},
			[]*pb.Instance{testInstance("api", "1", "n1"), testInstance("api", "2", "n1"), testInstance("db", "1", "n1")},
			testInstance("api", "3", "n1"), "max_instances_per_service"},
		{"instances per session", &pb.Quota{MaxInstancesPerSession: 2},
			[]*pb.Instance{withSession(testInstance("api", "1", "n1"), "s1"), withSession(testInstance("db", "1", "n1"), "s1"), testInstance("db", "2", "n1")},
			withSession(testInstance("db", "3", "n1"), "s1"), "max_instances_per_session"},
		{"metadata bytes", &pb.Quota{MaxInstanceMetadataBytes: 64},
			[]*pb.Instance{testInstance("api", "1", "n1")},
			func() *pb.Instance {
				in := testInstance("api", "2", "n1")
				in.Metadata["big"] = strings.Repeat("b", 64)
				return in
			}(), "max_instance_metadata_bytes"},
		{"registry bytes", &pb.Quota{RegistryOverheads: true, MaxRegistryBytes: uint64(2*(proto.Size(testInstance("api", "1", "n1"))+maxStampBytes+instanceOverheadBytes) +
			serviceOverheadBytes + 40)},
			[]*pb.Instance{testInstance("api", "1", "n1"), testInstance("api", "2", "n1")},
			testInstance("api", "3", "n1"), "max_registry_bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newFSMDriver(t, 64)
			d.mustApply(sessionCreateCmd("s1", "n1"))
			for _, in := range tt.fill {
				d.mustApply(withQuota(in, tt.quota))
			}
			before := stateOf(d.fsm)
			_, err := d.apply(withQuota(tt.next, tt.quota))
			before.revision++ // the refused entry still has its index
			if !errors.Is(err, ErrQuotaExceeded) || !strings.Contains(err.Error(), tt.key) {
				t.Fatalf("register past the limit: %v, want ErrQuotaExceeded naming %s", err, tt.key)
			}
			if diff := diffStates(before, stateOf(d.fsm)); diff != "" {
				t.Fatalf("a refused registration changed the state:\n%s", diff)
			}
			// Updating a registered instance in place is allowed; an
			// entry without a quota (older leader) is not limited.
			d.mustApply(withQuota(tt.fill[0], tt.quota))
			d.mustApply(registerCmd(tt.next))
			checkQuotaCounts(t, tt.name, d.fsm)
		})
	}
}

// A new instance counts its encoding, the most its revisions can add to
// it and the overhead of an instance; the first of its service the
// overhead of a service too.
func TestFSMQuotaCountsARegistrationAtItsEncodedSize(t *testing.T) {
	for _, tt := range []struct {
		service string
		spare   int
	}{{"api", 0}, {"api", -1}, {"db", 0}, {"db", -1}} {
		d := newFSMDriver(t, 64)
		d.mustApply(registerCmd(testInstance("api", "1", "n1")))
		next := testInstance(tt.service, "2", "n1")
		limit := d.fsm.RegistryBytes() + int64(proto.Size(next)+maxStampBytes+instanceOverheadBytes+tt.spare)
		if tt.service != "api" {
			limit += serviceOverheadBytes
		}
		cmd := registerCmd(next)
		cmd.Quota = &pb.Quota{RegistryOverheads: true, MaxRegistryBytes: uint64(limit)}
		_, err := d.apply(cmd)
		switch {
		case tt.spare == 0 && err != nil:
			t.Fatalf("a registration of service %s that fits the registry bytes exactly was refused: %v", tt.service, err)
		case tt.spare < 0 && !errors.Is(err, ErrQuotaExceeded):
			t.Fatalf("a registration of service %s one byte past the registry bytes: %v, want ErrQuotaExceeded", tt.service, err)
		}
		if got := d.fsm.RegistryBytes(); got > limit {
			t.Fatalf("the registry counts %d bytes, past its limit %d", got, limit)
		}
	}
}

// Small instances, each in a service of its own, cost the registry's
// memory many times their encoded size: the quota counts what each
// instance and each service costs.
func TestFSMQuotaCountsWhatEachInstanceAndServiceCosts(t *testing.T) {
	const limit = 64 << 10
	d := newFSMDriver(t, 64)
	registered := 0
	for i := 0; ; i++ {
		inst := tinyInstance(i)
		inst.Service = fmt.Sprintf("s%d", i)
		cmd := registerCmd(inst)
		cmd.Quota = &pb.Quota{RegistryOverheads: true, MaxRegistryBytes: limit}
		if _, err := d.apply(cmd); err != nil {
			if !errors.Is(err, ErrQuotaExceeded) {
				t.Fatalf("registration %d: %v", i, err)
			}
			break
		}
		registered++
	}
	if most := limit / (instanceOverheadBytes + serviceOverheadBytes); registered > most {
		t.Fatalf("%d small instances, each in its own service, fit in %d bytes; each costs more than %d, so at most %d fit",
			registered, limit, instanceOverheadBytes+serviceOverheadBytes, most)
	}
	if got := d.fsm.RegistryBytes(); got > limit {
		t.Fatalf("the registry counts %d bytes, past its limit %d", got, limit)
	}
	checkQuotaCounts(t, "full", d.fsm)
}

// A registration without Quota.registry_overheads (a leader while a Raft
// server's build predates them) is counted as those builds count it, by
// its encoded bytes alone, so that every replica decides alike.
func TestFSMQuotaWithoutRegistryOverheadsCountsEncodedBytesAlone(t *testing.T) {
	const limit = 64 << 10
	d := newFSMDriver(t, 64)
	var encoded int64
	registered := 0
	var refused *pb.Instance
	for i := 0; refused == nil; i++ {
		inst := tinyInstance(i)
		inst.Service = fmt.Sprintf("s%d", i)
		cmd := registerCmd(inst)
		cmd.Quota = &pb.Quota{MaxRegistryBytes: limit}
		if _, err := d.apply(cmd); err != nil {
			if !errors.Is(err, ErrQuotaExceeded) || !strings.Contains(err.Error(), "bytes of instances") {
				t.Fatalf("registration %d: %v, want ErrQuotaExceeded counting bytes of instances", i, err)
			}
			refused = inst
			continue
		}
		encoded += int64(proto.Size(d.fsm.Instance(inst.Service, inst.Id)))
		registered++
	}
	if encoded > limit || encoded+int64(proto.Size(refused)) <= limit {
		t.Fatalf("%d instances of %d encoded bytes let in under a limit of %d, the next (%d bytes) refused: want the encoded bytes alone filled to the limit",
			registered, encoded, limit, proto.Size(refused))
	}
	// An update compared with the stored instance, stamps included.
	q := &pb.Quota{MaxRegistryBytes: uint64(encoded)}
	stored := d.fsm.Instance("s0", tinyInstance(0).Id)
	next := proto.Clone(stored).(*pb.Instance)
	next.CreateRevision, next.ModRevision, next.HealthSince = 0, 0, 0
	next.Address += strings.Repeat("0", proto.Size(stored)-proto.Size(next))
	cmd := registerCmd(next)
	cmd.Quota = q
	if _, err := d.apply(cmd); err != nil {
		t.Fatalf("an update as large as the stored instance, stamps included, of a full registry: %v; builds before version 5 let it in", err)
	}
}

// fillUnlimited registers n instances of 4 services with no limit (as a
// leader of an older build counting less may have let them in) and
// returns the driver.
func fillUnlimited(t *testing.T, n int) *fsmDriver {
	t.Helper()
	d := newFSMDriver(t, 64)
	d.mustApply(sessionCreateCmd("s1", "n1"))
	for i := range n {
		d.mustApply(registerCmd(withSession(testInstance(fmt.Sprintf("svc%d", i%4), fmt.Sprint(i), "n1"), "s1")))
	}
	return d
}

// A registry past max_registry_bytes (the limit was lowered, or an
// upgrade counts more than the build that let its instances in) keeps
// serving reads, removals and updates that do not grow it; only what
// grows it is refused, and says why.
func TestFSMQuotaRegistryPastItsLimitRefusesOnlyGrowth(t *testing.T) {
	d := fillUnlimited(t, 40)
	insts, _ := d.fsm.AllInstances()
	var encoded int64
	for _, in := range insts {
		encoded += int64(proto.Size(in))
	}
	limit := uint64(encoded + 100) // what counting the encodings alone let in
	if counted := d.fsm.RegistryBytes(); counted <= int64(limit) {
		t.Fatalf("the registry counts %d bytes, want more than the limit %d", counted, limit)
	}
	q := &pb.Quota{RegistryOverheads: true, MaxRegistryBytes: limit}
	withQuota := func(inst *pb.Instance) *pb.Command {
		cmd := registerCmd(inst)
		cmd.Quota = q
		return cmd
	}
	refused := func(what string, inst *pb.Instance) {
		t.Helper()
		before := stateOf(d.fsm)
		_, err := d.apply(withQuota(inst))
		before.revision++
		if !errors.Is(err, ErrQuotaExceeded) {
			t.Fatalf("%s: %v, want ErrQuotaExceeded", what, err)
		}
		for _, want := range []string{"max_registry_bytes", "--max-registry-bytes", "deregister instances no longer used", inst.Service + "/" + inst.Id} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not say %q", what, err, want)
			}
		}
		if diff := diffStates(before, stateOf(d.fsm)); diff != "" {
			t.Fatalf("%s changed the state:\n%s", what, diff)
		}
	}

	refused("a new instance", withSession(testInstance("svc0", "new", "n1"), "s1"))
	refused("a new service", withSession(testInstance("new", "1", "n1"), "s1"))
	grown := withSession(testInstance("svc1", "1", "n1"), "s1")
	grown.Metadata["more"] = "x"
	refused("an update that grows an instance", grown)

	// Reads, and writes that leave the registry as large or make it smaller.
	if got, _ := d.fsm.Instances("svc1"); len(got) != 10 {
		t.Fatalf("svc1 has %d instances, want 10", len(got))
	}
	d.mustApply(withQuota(withSession(testInstance("svc1", "1", "n1"), "s1")))
	smaller := withSession(testInstance("svc1", "5", "n1"), "s1")
	smaller.Metadata, smaller.Tags = nil, nil
	d.mustApply(withQuota(smaller))
	d.mustApply(setHealthCmd(pb.Health_CRITICAL, "check failed", instRef("svc2", "2")))
	d.mustApply(deregisterCmd("svc3", "3"))
	checkQuotaCounts(t, "after shrinking writes", d.fsm)
	if got := d.fsm.Instance("svc1", "5"); got == nil || len(got.Metadata) != 0 {
		t.Fatalf("the instance updated to a smaller one reads %v", got)
	}

	// A restored replica counts the same and refuses the same.
	g := NewFSM(16)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, d.fsm)))); err != nil {
		t.Fatal(err)
	}
	if g.RegistryBytes() != d.fsm.RegistryBytes() {
		t.Fatalf("restored RegistryBytes = %d, want %d", g.RegistryBytes(), d.fsm.RegistryBytes())
	}
	d.fsm = g
	refused("a new instance after a restore", withSession(testInstance("svc0", "new", "n1"), "s1"))

	// Once removals bring it under its limit, it grows again.
	d.mustApply(sessionDestroyCmd("s1"))
	if n := d.fsm.InstanceCount(); n != 0 {
		t.Fatalf("%d instances after their session ended", n)
	}
	d.mustApply(withQuota(testInstance("svc0", "new", "n1")))
	checkQuotaCounts(t, "after regrowth", d.fsm)
}

// The stored encoding of an instance holds the revisions the state
// machine stamps on it, which its registration's does not: an update in
// place that grows the instance by as many bytes is growth, refused at
// the limit, not a same-size update that slips through again and again.
func TestFSMQuotaRefusesUpdatesThatGrowAnInstanceByItsRevisions(t *testing.T) {
	d := fillUnlimited(t, 8)
	q := &pb.Quota{RegistryOverheads: true, MaxRegistryBytes: uint64(d.fsm.RegistryBytes())} // full
	stored := d.fsm.Instance("svc0", "0")
	registered := proto.Clone(stored).(*pb.Instance)
	registered.CreateRevision, registered.ModRevision, registered.HealthSince = 0, 0, 0
	revisions := proto.Size(stored) - proto.Size(registered)

	next := proto.Clone(registered).(*pb.Instance)
	next.Metadata["owner"] += strings.Repeat("p", revisions)
	cmd := registerCmd(next)
	cmd.Quota = q
	if _, err := d.apply(cmd); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("an update that grows an instance of a full registry by %d bytes: %v, want ErrQuotaExceeded; the registry counts %d bytes, its limit is %d",
			revisions, err, d.fsm.RegistryBytes(), q.MaxRegistryBytes)
	}
	cmd = registerCmd(registered)
	cmd.Quota = q
	d.mustApply(cmd) // the same instance again
}
