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

// recount computes the quota counts from the FSM's instances.
func recount(f *FSM) (bytes int64, bySession map[string]int) {
	bySession = map[string]int{}
	insts, _ := f.AllInstances()
	for _, inst := range insts {
		bytes += int64(proto.Size(inst))
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
		{"registry bytes", &pb.Quota{MaxRegistryBytes: uint64(2*proto.Size(testInstance("api", "1", "n1")) + 40)},
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

func TestFSMQuotaCountsARegistrationAtItsEncodedSize(t *testing.T) {
	for _, spare := range []int{0, -1} {
		d := newFSMDriver(t, 64)
		d.mustApply(registerCmd(testInstance("api", "1", "n1")))
		next := testInstance("api", "2", "n1")
		limit := d.fsm.RegistryBytes() + int64(proto.Size(next)) + int64(spare)
		cmd := registerCmd(next)
		cmd.Quota = &pb.Quota{MaxRegistryBytes: uint64(limit)}
		_, err := d.apply(cmd)
		switch {
		case spare == 0 && err != nil:
			t.Fatalf("a registration that fits the registry bytes exactly was refused: %v", err)
		case spare < 0 && !errors.Is(err, ErrQuotaExceeded):
			t.Fatalf("a registration one byte past the registry bytes: %v, want ErrQuotaExceeded", err)
		}
	}
}
