package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/snapshot"
)

// ---- commands ----

func registerCmd(inst *pb.Instance) *pb.Command {
	return &pb.Command{Kind: &pb.Command_Register{Register: inst}}
}

func deregisterCmd(service, id string) *pb.Command {
	return &pb.Command{Kind: &pb.Command_Deregister{Deregister: instRef(service, id)}}
}

func setHealthCmd(h pb.Health, output string, refs ...*pb.InstanceRef) *pb.Command {
	return &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: &pb.SetHealth{Instances: refs, Health: h, Output: output}}}
}

func setNodeHealthCmd(node string, h pb.Health, output string, refs ...*pb.InstanceRef) *pb.Command {
	return &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: &pb.SetHealth{Node: node, Instances: refs, Health: h, Output: output}}}
}

func sessionCreateCmd(id, node string) *pb.Command {
	return &pb.Command{Kind: &pb.Command_SessionCreate{SessionCreate: &pb.SessionCreate{
		Session: &pb.Session{Id: id, Node: node, Owner: "test " + id, Created: 42},
	}}}
}

func sessionDestroyCmd(ids ...string) *pb.Command {
	return &pb.Command{Kind: &pb.Command_SessionDestroy{SessionDestroy: &pb.SessionDestroy{Ids: ids}}}
}

func nodeUpsertCmd(n *pb.Node) *pb.Command {
	return &pb.Command{Kind: &pb.Command_NodeUpsert{NodeUpsert: n}}
}

func nodeRemoveCmd(name string) *pb.Command {
	return &pb.Command{Kind: &pb.Command_NodeRemove{NodeRemove: &pb.NodeRemove{Name: name}}}
}

func instRef(service, id string) *pb.InstanceRef { return &pb.InstanceRef{Service: service, Id: id} }

// testInstance is a passing instance of service on node with every plain
// field set, so that a lost field shows in comparisons.
func testInstance(service, id, node string) *pb.Instance {
	return &pb.Instance{
		Id: id, Service: service, Node: node,
		Address: "10.0.0.1:" + id, Weight: 100, Zone: "z1", Version: "v1.2.3",
		Tags:     []string{"blue", "canary"},
		Metadata: map[string]string{"owner": "team-" + service},
		Health:   pb.Health_PASSING,
	}
}

func withSession(inst *pb.Instance, session string) *pb.Instance {
	inst.Session = session
	return inst
}

func commandLog(tb testing.TB, index uint64, cmd *pb.Command) *raft.Log {
	tb.Helper()
	data, err := proto.Marshal(cmd)
	if err != nil {
		tb.Fatalf("marshal command: %v", err)
	}
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

// responseError converts an FSM response to the error it must be; a
// retried request answers with its first result.
func responseError(tb testing.TB, resp any) error {
	tb.Helper()
	switch r := resp.(type) {
	case nil:
		return nil
	case error:
		return r
	case Duplicate:
		return r.Err
	}
	tb.Fatalf("FSM response is a %T (%v), want nil or an error", resp, resp)
	return nil
}

// fsmDriver feeds an FSM consecutive committed entries, as raft does, with a
// deterministic leader clock (Command.Time = index * 1000).
type fsmDriver struct {
	tb   testing.TB
	fsm  *FSM
	next uint64 // index of the next entry
}

func newFSMDriver(tb testing.TB, ringSize int) *fsmDriver {
	return &fsmDriver{tb: tb, fsm: NewFSM(ringSize), next: 1}
}

func (d *fsmDriver) nextLog(cmd *pb.Command) *raft.Log {
	if cmd.Time == 0 {
		cmd.Time = int64(d.next) * 1000
	}
	l := commandLog(d.tb, d.next, cmd)
	d.next++
	return l
}

// apply applies cmd as the next entry; it returns the entry's index and the
// FSM's response.
func (d *fsmDriver) apply(cmd *pb.Command) (uint64, error) {
	d.tb.Helper()
	l := d.nextLog(cmd)
	return l.Index, responseError(d.tb, d.fsm.Apply(l))
}

func (d *fsmDriver) mustApply(cmd *pb.Command) uint64 {
	d.tb.Helper()
	idx, err := d.apply(cmd)
	if err != nil {
		d.tb.Fatalf("apply %v at %d: %v", cmd, idx, err)
	}
	return idx
}

// mustApplyBatch applies cmds as one ApplyBatch call and fails on any error.
func (d *fsmDriver) mustApplyBatch(cmds ...*pb.Command) []uint64 {
	d.tb.Helper()
	logs := make([]*raft.Log, len(cmds))
	idx := make([]uint64, len(cmds))
	for i, c := range cmds {
		logs[i] = d.nextLog(c)
		idx[i] = logs[i].Index
	}
	for i, resp := range d.fsm.ApplyBatch(logs) {
		if err := responseError(d.tb, resp); err != nil {
			d.tb.Fatalf("batch entry %d (%v): %v", idx[i], cmds[i], err)
		}
	}
	return idx
}

// ---- state ----

// registryState is everything the FSM holds that a snapshot must keep.
type registryState struct {
	revision  uint64
	instances []*pb.Instance
	sessions  []*pb.Session
	nodes     []*pb.Node
}

// stateOf reads f's state; callers make sure nothing applies meanwhile.
func stateOf(f *FSM) registryState {
	insts, rev := f.AllInstances()
	return registryState{revision: rev, instances: insts, sessions: f.Sessions(), nodes: f.Nodes()}
}

// diffStates returns "" when the states are equal, else what differs.
func diffStates(want, got registryState) string {
	var b strings.Builder
	if want.revision != got.revision {
		fmt.Fprintf(&b, "revision: got %d, want %d\n", got.revision, want.revision)
	}
	diffMessages(&b, "instance", want.instances, got.instances)
	diffMessages(&b, "session", want.sessions, got.sessions)
	diffMessages(&b, "node", want.nodes, got.nodes)
	return b.String()
}

func diffMessages[M proto.Message](b *strings.Builder, what string, want, got []M) {
	if len(want) != len(got) {
		fmt.Fprintf(b, "%d %ss, want %d\n", len(got), what, len(want))
	}
	for i := range min(len(want), len(got)) {
		if !proto.Equal(want[i], got[i]) {
			fmt.Fprintf(b, "%s %d:\n  got  {%v}\n  want {%v}\n", what, i, compactText(got[i]), compactText(want[i]))
			return
		}
	}
}

func compactText(m proto.Message) string {
	return prototext.MarshalOptions{}.Format(m)
}

// checkInvariants checks what must hold after any sequence of commands.
func checkInvariants(t *testing.T, f *FSM) {
	t.Helper()
	st := stateOf(f)
	// A live store may apply an entry (or move its revision over a no-op)
	// between two reads: take the state again until both reads see one
	// revision.
	services, rev := f.Services()
	for i := 0; rev != st.revision && i < 100; i++ {
		time.Sleep(10 * time.Millisecond)
		st = stateOf(f)
		services, rev = f.Services()
	}
	sessions := make(map[string]bool)
	for _, s := range st.sessions {
		sessions[s.Id] = true
	}
	counts := make(map[string][2]uint32)
	wantChecked := make(map[string]*pb.Instance)
	byHealth := make(map[pb.Health]int)
	for _, inst := range st.instances {
		h := inst.Health
		if _, known := pb.Health_name[int32(h)]; !known {
			h = pb.Health_HEALTH_UNSPECIFIED // as HealthCounts counts a value it does not know
		}
		byHealth[h]++
		key := inst.Service + "/" + inst.Id
		if inst.Session != "" && !sessions[inst.Session] {
			t.Errorf("instance %s is bound to session %q, which does not exist", key, inst.Session)
		}
		if inst.CreateRevision == 0 || inst.CreateRevision > inst.ModRevision || inst.ModRevision > st.revision {
			t.Errorf("instance %s: create_revision %d, mod_revision %d, registry revision %d",
				key, inst.CreateRevision, inst.ModRevision, st.revision)
		}
		if got := f.Instance(inst.Service, inst.Id); !proto.Equal(got, inst) {
			t.Errorf("Instance(%s) = %v, AllInstances has %v", key, got, inst)
		}
		c := counts[inst.Service]
		c[0]++
		if inst.Health == pb.Health_PASSING {
			c[1]++
		}
		counts[inst.Service] = c
		if inst.Check != nil {
			// Listed for health checks: without tags and metadata.
			c := proto.Clone(inst).(*pb.Instance)
			c.Tags, c.Metadata = nil, nil
			wantChecked[key] = c
		}
	}
	if rev != st.revision {
		t.Errorf("Services revision %d, AllInstances revision %d", rev, st.revision)
	}
	if got := f.HealthCounts(); !maps.Equal(got, byHealth) {
		t.Errorf("HealthCounts() = %v, the instances have %v", got, byHealth)
	}
	if len(services) != len(counts) {
		t.Errorf("Services() lists %d services, instances belong to %d", len(services), len(counts))
	}
	for _, s := range services {
		if c := counts[s.Name]; s.Instances != c[0] || s.Passing != c[1] {
			t.Errorf("Services(): %s has %d instances (%d passing), want %d (%d)", s.Name, s.Instances, s.Passing, c[0], c[1])
		}
		insts, _ := f.Instances(s.Name)
		if len(insts) != int(counts[s.Name][0]) {
			t.Errorf("Instances(%s) has %d, want %d", s.Name, len(insts), counts[s.Name][0])
		}
	}
	checked := f.CheckedInstances()
	if len(checked) != len(wantChecked) {
		t.Errorf("CheckedInstances() has %d, want %d", len(checked), len(wantChecked))
	}
	for _, inst := range checked {
		if !proto.Equal(wantChecked[inst.Service+"/"+inst.Id], inst) {
			t.Errorf("CheckedInstances() has stale or unchecked %s/%s", inst.Service, inst.Id)
		}
	}
}

// ---- events ----

// drainWatcher returns every response w has ready now, without blocking:
// Next with a cancelled context still returns what is ready. Nothing may
// apply meanwhile, so a second snapshot means the watcher cannot catch up.
// The pages of a snapshot come back as one response.
func drainWatcher(tb testing.TB, w *Watcher) []*pb.WatchResponse {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out []*pb.WatchResponse
	for {
		resp, err := w.Next(ctx)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				tb.Fatalf("Next: %v, want context.Canceled once drained", err)
			}
			return out
		}
		if !resp.Snapshot && len(resp.Events) == 0 {
			tb.Fatalf("Next returned a response without events at revision %d", resp.Header.GetRevision())
		}
		if resp.Snapshot && len(out) > 0 && out[len(out)-1].Snapshot {
			tb.Fatalf("two snapshots in a row at revisions %d and %d with no write in between",
				out[len(out)-1].Header.GetRevision(), resp.Header.GetRevision())
		}
		if n := len(out); n > 0 && out[n-1].More {
			// The next page of a snapshot: assemble it, as clients do.
			prev := out[n-1]
			if resp.Snapshot || resp.Header.GetRevision() != prev.Header.GetRevision() {
				tb.Fatalf("snapshot page at revision %d (snapshot=%v) continues a snapshot at %d",
					resp.Header.GetRevision(), resp.Snapshot, prev.Header.GetRevision())
			}
			prev.Events = append(prev.Events, resp.Events...)
			prev.More = resp.More
			continue
		}
		out = append(out, resp)
	}
}

func flattenEvents(resps []*pb.WatchResponse) []*pb.Event {
	var evs []*pb.Event
	for _, r := range resps {
		evs = append(evs, r.Events...)
	}
	return evs
}

// describeEvents renders events as "PUT svc/id@rev" for readable comparisons.
func describeEvents(evs []*pb.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = fmt.Sprintf("%s %s/%s@%d", e.Type, e.Instance.GetService(), e.Instance.GetId(), e.Revision)
	}
	return out
}

// eventRecorder follows every event applied to an FSM after it was made.
type eventRecorder struct {
	tb testing.TB
	w  *Watcher
}

func recordEvents(tb testing.TB, f *FSM) *eventRecorder {
	tb.Helper()
	r := &eventRecorder{tb: tb, w: f.Watch("", 0)}
	if resps := drainWatcher(tb, r.w); len(resps) != 1 || !resps[0].Snapshot {
		tb.Fatalf("a watcher from 0 first got %v, want one snapshot", resps)
	}
	return r
}

// next returns the events applied since the last call, as describeEvents.

func (r *eventRecorder) next() []string {
	r.tb.Helper()
	resps := drainWatcher(r.tb, r.w)
	for _, resp := range resps {
		if resp.Snapshot {
			r.tb.Fatalf("recorder got a snapshot; the event ring is too small for this test")
		}
	}
	return describeEvents(flattenEvents(resps))
}

// ---- tests ----

func TestFSMRegister(t *testing.T) {
	d := newFSMDriver(t, 64)
	d.next = 5 // revisions are raft indexes, not counts
	rec := recordEvents(t, d.fsm)

	in := testInstance("api", "1", "n1")
	in.Check = &pb.Check{Ttl: durationpb.New(10 * time.Second)}
	rev1 := d.mustApply(registerCmd(in))
	got := d.fsm.Instance("api", "1")
	want := proto.Clone(in).(*pb.Instance)
	want.CreateRevision, want.ModRevision, want.HealthSince = rev1, rev1, int64(rev1)*1000
	if !proto.Equal(got, want) {
		t.Fatalf("after register:\n got  %v\n want %v", compactText(got), compactText(want))
	}
	if insts, rev := d.fsm.Instances("api"); len(insts) != 1 || !proto.Equal(insts[0], got) || rev != rev1 {
		t.Errorf("Instances(api) = %v @%d, want the one instance @%d", insts, rev, rev1)
	}
	if evs := rec.next(); !slices.Equal(evs, []string{fmt.Sprintf("PUT api/1@%d", rev1)}) {
		t.Errorf("events = %v", evs)
	}

	// Re-register with a new address, same health: create_revision and
	// health_since stay, mod_revision moves.
	in2 := testInstance("api", "1", "n1")
	in2.Address = "10.0.0.9:1"
	rev2 := d.mustApply(registerCmd(in2))
	got = d.fsm.Instance("api", "1")
	if got.Address != in2.Address || got.CreateRevision != rev1 || got.ModRevision != rev2 || got.HealthSince != int64(rev1)*1000 {
		t.Errorf("after re-register: address %q create %d mod %d health_since %d; want %q %d %d %d",
			got.Address, got.CreateRevision, got.ModRevision, got.HealthSince, in2.Address, rev1, rev2, int64(rev1)*1000)
	}
	if got.Check != nil {
		t.Errorf("re-register without a check kept the old check %v", got.Check)
	}
	// Re-register with another health: health_since moves.
	in3 := testInstance("api", "1", "n1")
	in3.Health = pb.Health_CRITICAL
	rev3 := d.mustApply(registerCmd(in3))
	if got := d.fsm.Instance("api", "1"); got.CreateRevision != rev1 || got.ModRevision != rev3 || got.HealthSince != int64(rev3)*1000 {
		t.Errorf("after health change: create %d mod %d health_since %d; want %d %d %d",
			got.CreateRevision, got.ModRevision, got.HealthSince, rev1, rev3, int64(rev3)*1000)
	}

	d.mustApply(registerCmd(testInstance("api", "0", "n2")))
	last := d.mustApply(registerCmd(testInstance("db", "1", "n2")))
	if r := d.fsm.Revision(); r != last {
		t.Errorf("Revision() = %d, want the last index %d", r, last)
	}
	insts, _ := d.fsm.Instances("api")
	if ids := []string{insts[0].Id, insts[1].Id}; len(insts) != 2 || !slices.Equal(ids, []string{"0", "1"}) {
		t.Errorf("Instances(api) ids = %v, want [0 1] sorted", ids)
	}
	services, rev := d.fsm.Services()
	wantServices := []*pb.ServiceSummary{{Name: "api", Instances: 2, Passing: 1}, {Name: "db", Instances: 1, Passing: 1}}
	if rev != last || len(services) != 2 || !proto.Equal(services[0], wantServices[0]) || !proto.Equal(services[1], wantServices[1]) {
		t.Errorf("Services() = %v @%d, want %v @%d", services, rev, wantServices, last)
	}
	if d.fsm.Instance("api", "nope") != nil || d.fsm.Instance("nope", "1") != nil {
		t.Error("Instance of an unknown id is not nil")
	}
	if insts, _ := d.fsm.Instances("nope"); len(insts) != 0 {
		t.Errorf("Instances(nope) = %v", insts)
	}
	checkInvariants(t, d.fsm)
}

func TestFSMDeregister(t *testing.T) {
	d := newFSMDriver(t, 64)
	d.mustApply(registerCmd(testInstance("api", "1", "n1")))
	d.mustApply(registerCmd(testInstance("api", "2", "n1")))
	rec := recordEvents(t, d.fsm)

	rev := d.mustApply(deregisterCmd("api", "1"))
	if d.fsm.Instance("api", "1") != nil {
		t.Error("api/1 still there after deregister")
	}
	if evs := rec.next(); !slices.Equal(evs, []string{fmt.Sprintf("DELETE api/1@%d", rev)}) {
		t.Errorf("events = %v", evs)
	}
	d.mustApply(deregisterCmd("api", "2"))
	if services, _ := d.fsm.Services(); len(services) != 0 {
		t.Errorf("Services() after removing the last instance = %v, want none", services)
	}
}

// TestFSMRejects applies commands that must be refused: the response wraps
// the right sentinel, the state is unchanged, no event is published, and
// the revision still moves to the entry's index (it was committed).
func TestFSMRejects(t *testing.T) {
	tests := []struct {
		name string
		data func(t *testing.T) []byte
		want error
	}{
		{"deregister unknown id", marshalled(deregisterCmd("api", "nope")), apierr.ErrNotFound},
		{"deregister unknown service", marshalled(deregisterCmd("nope", "1")), ErrNotFound},
		{"register without service", marshalled(registerCmd(testInstance("", "1", "n1"))), ErrInvalidArgument},
		{"register without id", marshalled(registerCmd(testInstance("api", "", "n1"))), ErrInvalidArgument},
		{"register with unknown session", marshalled(registerCmd(withSession(testInstance("api", "9", "n1"), "ghost"))), ErrSessionRequired},
		{"register over existing with unknown session", marshalled(registerCmd(withSession(testInstance("api", "1", "n1"), "ghost"))), ErrSessionRequired},
		{"session without id", marshalled(sessionCreateCmd("", "n1")), ErrInvalidArgument},
		{"session create without session", marshalled(&pb.Command{Kind: &pb.Command_SessionCreate{SessionCreate: &pb.SessionCreate{}}}), ErrInvalidArgument},
		{"node without name", marshalled(nodeUpsertCmd(&pb.Node{GrpcAddress: "x:1"})), ErrInvalidArgument},
		{"command without kind", marshalled(&pb.Command{Time: 7}), ErrInvalidArgument},
		{"garbage data", fixed([]byte("\xff\xff\xff\xff not a protobuf")), ErrInvalidArgument},
		{"truncated command", func(t *testing.T) []byte {
			b := marshalled(registerCmd(testInstance("api", "7", "n1")))(t)
			return b[:len(b)/2]
		}, ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newFSMDriver(t, 64)
			d.mustApply(nodeUpsertCmd(&pb.Node{Name: "n1"}))
			d.mustApply(sessionCreateCmd("s1", "n1"))
			d.mustApply(registerCmd(withSession(testInstance("api", "1", "n1"), "s1")))
			before := stateOf(d.fsm)
			rec := recordEvents(t, d.fsm)

			l := &raft.Log{Index: d.next + 10, Type: raft.LogCommand, Data: tc.data(t)}
			err := responseError(t, d.fsm.Apply(l))
			if !errors.Is(err, tc.want) {
				t.Fatalf("response = %v, want an error wrapping %v", err, tc.want)
			}
			after := stateOf(d.fsm)
			if after.revision != l.Index {
				t.Errorf("Revision() = %d, want %d: a rejected entry is still committed", after.revision, l.Index)
			}
			after.revision = before.revision
			if diff := diffStates(before, after); diff != "" {
				t.Errorf("state changed by a rejected command:\n%s", diff)
			}
			if evs := rec.next(); len(evs) != 0 {
				t.Errorf("rejected command published events %v", evs)
			}
		})
	}
}

func marshalled(cmd *pb.Command) func(*testing.T) []byte {
	return func(t *testing.T) []byte { return commandLog(t, 1, cmd).Data }
}

func fixed(b []byte) func(*testing.T) []byte { return func(*testing.T) []byte { return b } }

func TestFSMSessions(t *testing.T) {
	d := newFSMDriver(t, 64)
	bound := withSession(testInstance("api", "1", "n1"), "s1")
	if _, err := d.apply(registerCmd(bound)); !errors.Is(err, ErrSessionRequired) {
		t.Fatalf("register with a session that does not exist: %v, want ErrSessionRequired", err)
	}
	d.mustApply(sessionCreateCmd("s1", "n1"))
	d.mustApply(sessionCreateCmd("s2", "n1"))
	d.mustApply(registerCmd(withSession(testInstance("api", "2", "n1"), "s1")))
	d.mustApply(registerCmd(withSession(testInstance("db", "1", "n1"), "s1")))
	d.mustApply(registerCmd(bound)) // now it works
	d.mustApply(registerCmd(withSession(testInstance("api", "3", "n1"), "s2")))
	d.mustApply(registerCmd(testInstance("api", "4", "n1")))
	if got := d.fsm.Instance("api", "1"); got.GetSession() != "s1" {
		t.Fatalf("api/1 session = %q, want s1", got.GetSession())
	}
	if ss := d.fsm.Sessions(); len(ss) != 2 || ss[0].Id != "s1" || ss[1].Id != "s2" || ss[0].Node != "n1" {
		t.Fatalf("Sessions() = %v", ss)
	}
	rec := recordEvents(t, d.fsm)

	// Destroying s1 (and an unknown id) removes s1 and its three instances in
	// one entry, in service/id order, all at that entry's revision.
	rev := d.mustApply(sessionDestroyCmd("s1", "ghost"))
	wantEvents := []string{
		fmt.Sprintf("DELETE api/1@%d", rev),
		fmt.Sprintf("DELETE api/2@%d", rev),
		fmt.Sprintf("DELETE db/1@%d", rev),
	}
	if evs := rec.next(); !slices.Equal(evs, wantEvents) {
		t.Errorf("events = %v, want %v", evs, wantEvents)
	}
	if ss := d.fsm.Sessions(); len(ss) != 1 || ss[0].Id != "s2" {
		t.Errorf("Sessions() after destroy = %v, want [s2]", ss)
	}
	insts, _ := d.fsm.AllInstances()
	if got := describeInstances(insts); !slices.Equal(got, []string{"api/3", "api/4"}) {
		t.Errorf("instances after destroy = %v, want [api/3 api/4]", got)
	}
	if _, err := d.apply(registerCmd(withSession(testInstance("api", "5", "n1"), "s1"))); !errors.Is(err, ErrSessionRequired) {
		t.Errorf("register on a destroyed session: %v, want ErrSessionRequired", err)
	}

	// Destroying nothing that exists changes nothing.
	before := stateOf(d.fsm)
	d.mustApply(sessionDestroyCmd("s1", "ghost"))
	d.mustApply(sessionDestroyCmd())
	after := stateOf(d.fsm)
	after.revision = before.revision
	if diff := diffStates(before, after); diff != "" {
		t.Errorf("destroying unknown sessions changed the state:\n%s", diff)
	}
	if evs := rec.next(); len(evs) != 0 {
		t.Errorf("destroying unknown sessions published %v", evs)
	}
	checkInvariants(t, d.fsm)
}

func describeInstances(insts []*pb.Instance) []string {
	out := make([]string, len(insts))
	for i, inst := range insts {
		out[i] = inst.Service + "/" + inst.Id
	}
	return out
}

func TestFSMSetHealth(t *testing.T) {
	d := newFSMDriver(t, 64)
	d.mustApply(registerCmd(testInstance("api", "1", "n1")))
	d.mustApply(registerCmd(testInstance("api", "2", "n1")))
	d.mustApply(registerCmd(testInstance("db", "1", "n2")))
	rec := recordEvents(t, d.fsm)

	type health struct {
		health pb.Health
		output string
		since  uint64 // index whose time health_since must be
		mod    uint64 // mod_revision; 0 means the revision of this step
	}
	steps := []struct {
		name    string
		cmd     *pb.Command
		changed []string // instances with an event at this step's revision
		want    map[string]health
	}{{
		name:    "by refs, unknown refs ignored",
		cmd:     setHealthCmd(pb.Health_CRITICAL, "ttl expired", instRef("api", "1"), instRef("api", "nope"), instRef("nope", "1")),
		changed: []string{"api/1"},
		want:    map[string]health{"api/1": {pb.Health_CRITICAL, "ttl expired", 4, 0}, "api/2": {pb.Health_PASSING, "", 2, 2}},
	}, {
		name: "same health and output: nothing",
		cmd:  setHealthCmd(pb.Health_CRITICAL, "ttl expired", instRef("api", "1")),
		want: map[string]health{"api/1": {pb.Health_CRITICAL, "ttl expired", 4, 4}},
	}, {
		name:    "same health, new output: health_since stays",
		cmd:     setHealthCmd(pb.Health_CRITICAL, "connection refused", instRef("api", "1")),
		changed: []string{"api/1"},
		want:    map[string]health{"api/1": {pb.Health_CRITICAL, "connection refused", 4, 0}},
	}, {
		name:    "by node ignores refs",
		cmd:     setNodeHealthCmd("n1", pb.Health_WARNING, "node suspect", instRef("db", "1")),
		changed: []string{"api/1", "api/2"},
		want: map[string]health{
			"api/1": {pb.Health_WARNING, "node suspect", 7, 0},
			"api/2": {pb.Health_WARNING, "node suspect", 7, 0},
			"db/1":  {pb.Health_PASSING, "", 3, 3},
		},
	}, {
		name: "unknown node: nothing",
		cmd:  setNodeHealthCmd("n9", pb.Health_CRITICAL, "gone"),
		want: map[string]health{"db/1": {pb.Health_PASSING, "", 3, 3}},
	}, {
		name:    "back to passing",
		cmd:     setNodeHealthCmd("n1", pb.Health_PASSING, ""),
		changed: []string{"api/1", "api/2"},
		want:    map[string]health{"api/1": {pb.Health_PASSING, "", 9, 0}, "api/2": {pb.Health_PASSING, "", 9, 0}},
	}}
	for _, step := range steps {
		rev := d.mustApply(step.cmd)
		var want []string
		for _, key := range step.changed {
			want = append(want, fmt.Sprintf("PUT %s@%d", key, rev))
		}
		if evs := rec.next(); !slices.Equal(evs, want) {
			t.Errorf("%s: events %v, want %v", step.name, evs, want)
		}
		for key, h := range step.want {
			service, id, _ := strings.Cut(key, "/")
			got := d.fsm.Instance(service, id)
			mod := h.mod
			if mod == 0 {
				mod = rev
			}
			if got.Health != h.health || got.HealthOutput != h.output || got.HealthSince != int64(h.since)*1000 || got.ModRevision != mod {
				t.Errorf("%s: %s is %v %q since %d mod %d; want %v %q since %d mod %d", step.name, key,
					got.Health, got.HealthOutput, got.HealthSince, got.ModRevision, h.health, h.output, int64(h.since)*1000, mod)
			}
		}
	}
	checkInvariants(t, d.fsm)
}

func TestFSMNodes(t *testing.T) {
	d := newFSMDriver(t, 64)
	d.mustApply(nodeUpsertCmd(&pb.Node{Name: "n2", GrpcAddress: "10.0.0.2:8400", Zone: "z2", Health: pb.Health_PASSING}))
	d.mustApply(nodeUpsertCmd(&pb.Node{Name: "n1", GrpcAddress: "10.0.0.1:8400", Zone: "z1"}))
	updated := &pb.Node{Name: "n1", GrpcAddress: "10.0.0.1:9400", RaftAddress: "10.0.0.1:8401", Zone: "z1", Build: "v2", Health: pb.Health_WARNING}
	d.mustApply(nodeUpsertCmd(updated))
	if got := d.fsm.Node("n1"); !proto.Equal(got, updated) {
		t.Errorf("Node(n1) = %v, want %v", got, updated)
	}
	if nodes := d.fsm.Nodes(); len(nodes) != 2 || nodes[0].Name != "n1" || nodes[1].Name != "n2" {
		t.Errorf("Nodes() = %v, want n1, n2", nodes)
	}

	d.mustApply(sessionCreateCmd("s1", "n1"))
	d.mustApply(sessionCreateCmd("s2", "n2"))
	d.mustApply(registerCmd(withSession(testInstance("api", "1", "n1"), "s1")))
	d.mustApply(registerCmd(testInstance("api", "2", "n1")))
	d.mustApply(registerCmd(testInstance("db", "7", "n1")))
	d.mustApply(registerCmd(withSession(testInstance("api", "3", "n2"), "s2")))
	d.mustApply(registerCmd(testInstance("db", "1", "n2")))
	rec := recordEvents(t, d.fsm)

	rev := d.mustApply(nodeRemoveCmd("n1"))
	want := []string{fmt.Sprintf("DELETE api/1@%d", rev), fmt.Sprintf("DELETE api/2@%d", rev), fmt.Sprintf("DELETE db/7@%d", rev)}
	if evs := rec.next(); !slices.Equal(evs, want) {
		t.Errorf("NodeRemove events = %v, want %v", evs, want)
	}
	if d.fsm.Node("n1") != nil {
		t.Error("Node(n1) still there")
	}
	if ss := d.fsm.Sessions(); len(ss) != 1 || ss[0].Id != "s2" {
		t.Errorf("Sessions() = %v, want [s2]", ss)
	}
	insts, _ := d.fsm.AllInstances()
	if got := describeInstances(insts); !slices.Equal(got, []string{"api/3", "db/1"}) {
		t.Errorf("instances = %v, want [api/3 db/1]", got)
	}

	before := stateOf(d.fsm)
	d.mustApply(nodeRemoveCmd("n9"))
	after := stateOf(d.fsm)
	after.revision = before.revision
	if diff := diffStates(before, after); diff != "" {
		t.Errorf("removing an unknown node changed the state:\n%s", diff)
	}
	if evs := rec.next(); len(evs) != 0 {
		t.Errorf("removing an unknown node published %v", evs)
	}
	checkInvariants(t, d.fsm)
}

// TestFSMNonCommandEntries: raft hands a BatchingFSM configuration entries
// too; they carry no command but their index is still the revision.
func TestFSMNonCommandEntries(t *testing.T) {
	f := NewFSM(16)
	reg := commandLog(t, 4, registerCmd(testInstance("api", "1", "n1")))
	logs := []*raft.Log{
		{Index: 3, Type: raft.LogConfiguration, Data: []byte("raft's own encoding")},
		reg,
		{Index: 6, Type: raft.LogConfiguration},
	}
	resps := f.ApplyBatch(logs)
	if len(resps) != len(logs) {
		t.Fatalf("ApplyBatch returned %d responses for %d entries", len(resps), len(logs))
	}
	for i, r := range resps {
		if r != nil {
			t.Errorf("response %d = %v, want nil", i, r)
		}
	}
	if r := f.Revision(); r != 6 {
		t.Errorf("Revision() = %d, want 6", r)
	}
	if got := f.Instance("api", "1"); got.GetModRevision() != 4 {
		t.Errorf("api/1 mod_revision = %d, want 4", got.GetModRevision())
	}
	for _, typ := range []raft.LogType{raft.LogConfiguration, raft.LogNoop, raft.LogBarrier} {
		idx := f.Revision() + 3
		if r := f.Apply(&raft.Log{Index: idx, Type: typ, Data: []byte{0xff}}); r != nil {
			t.Errorf("Apply(%v) = %v, want nil", typ, r)
		}
		if r := f.Revision(); r != idx {
			t.Errorf("after %v at %d: Revision() = %d", typ, idx, r)
		}
	}
	if insts, _ := f.AllInstances(); len(insts) != 1 {
		t.Errorf("non-command entries changed instances: %v", insts)
	}
}

// memSink is a raft.SnapshotSink over a buffer.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

var _ raft.SnapshotSink = (*memSink)(nil)

// snapshotBytes snapshots f and persists it into memory.
func snapshotBytes(tb testing.TB, f *FSM) []byte {
	tb.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		tb.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	return persistBytes(tb, snap)
}

func persistBytes(tb testing.TB, snap raft.FSMSnapshot) []byte {
	tb.Helper()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		tb.Fatalf("Persist: %v", err)
	}
	if !sink.closed || sink.cancelled {
		tb.Fatalf("Persist left the sink closed=%v cancelled=%v, want closed", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

// populatedFSM returns an FSM holding nodes, sessions and instances with
// every kind of field set.
func populatedFSM(tb testing.TB) *fsmDriver {
	d := newFSMDriver(tb, 256)
	d.mustApply(nodeUpsertCmd(&pb.Node{Name: "n1", GrpcAddress: "10.0.0.1:8400", RaftAddress: "10.0.0.1:8401", Zone: "z1", Build: "v1", Health: pb.Health_PASSING}))
	d.mustApply(nodeUpsertCmd(&pb.Node{Name: "n2", Zone: "z2"}))
	d.mustApply(sessionCreateCmd("s1", "n1"))
	d.mustApply(sessionCreateCmd("s2", "n2"))
	for i := range 12 {
		inst := testInstance([]string{"api", "db", "cache"}[i%3], fmt.Sprint(i), []string{"n1", "n2"}[i%2])
		switch i % 4 {
		case 0:
			inst.Session = []string{"s1", "s2"}[i%2]
		case 1:
			inst.Check = &pb.Check{Ttl: durationpb.New(15 * time.Second), DeregisterCriticalAfter: durationpb.New(time.Minute)}
		case 2:
			inst.Check = &pb.Check{Grpc: true, GrpcService: "svc", Interval: durationpb.New(time.Second), Timeout: durationpb.New(time.Second)}
			inst.Health = pb.Health_CRITICAL
		}
		d.mustApply(registerCmd(inst))
	}
	d.mustApply(setHealthCmd(pb.Health_WARNING, "slow", instRef("api", "3")))
	d.mustApply(&pb.Command{Kind: &pb.Command_NodeUpsert{NodeUpsert: &pb.Node{Name: "n3"}}})
	return d
}

func TestFSMSnapshotRoundTrip(t *testing.T) {
	d := populatedFSM(t)
	want := stateOf(d.fsm)
	snap, err := d.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Changes after Snapshot returns must not leak into it: raft persists
	// the snapshot while the FSM goes on applying.
	d.mustApply(registerCmd(testInstance("api", "new", "n1")))
	d.mustApply(setHealthCmd(pb.Health_CRITICAL, "down", instRef("api", "0"), instRef("db", "1")))
	d.mustApply(deregisterCmd("cache", "2"))
	d.mustApply(sessionDestroyCmd("s1"))
	d.mustApply(nodeRemoveCmd("n2"))
	data := persistBytes(t, snap)
	snap.Release()

	g := NewFSM(16)
	g.Apply(commandLog(t, 3, registerCmd(testInstance("old", "1", "n1")))) // replaced by Restore
	if err := g.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if diff := diffStates(want, stateOf(g)); diff != "" {
		t.Fatalf("restored state differs from the state at Snapshot:\n%s", diff)
	}
	checkInvariants(t, g)

	// An empty FSM round-trips too.
	empty := NewFSM(1)
	e := NewFSM(1)
	if err := e.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, empty)))); err != nil {
		t.Fatalf("Restore of an empty snapshot: %v", err)
	}
	if diff := diffStates(stateOf(empty), stateOf(e)); diff != "" {
		t.Errorf("empty round trip:\n%s", diff)
	}
}

func TestFSMRestoreRejects(t *testing.T) {
	good := snapshotBytes(t, populatedFSM(t).fsm)
	record := func(msgs ...proto.Message) []byte {
		var b bytes.Buffer
		b.WriteString(snapshot.StateMagic)
		for _, m := range msgs {
			if _, err := protodelim.MarshalTo(&b, m); err != nil {
				t.Fatal(err)
			}
		}
		return b.Bytes()
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"garbage", bytes.Repeat([]byte{0x9c, 0x01, 0xff}, 1000)},
		{"wrong magic", append([]byte("zrpc-registry-snapshoT\n"), good[len(snapshot.StateMagic):]...)},
		{"magic only", []byte(snapshot.StateMagic)},
		{"future format", record(&pb.SnapshotHeader{Format: snapshot.StateFormatACL + 1, Revision: 9})},
		{"ACL state in format 2", record(&pb.SnapshotHeader{Format: snapshot.StateFormat, Revision: 9, AclPolicies: 1}, &pb.ACLPolicy{Name: "p"})},
		{"ACL token without hash", record(&pb.SnapshotHeader{Format: snapshot.StateFormatACL, Revision: 9, AclTokens: 1}, &pb.ACLToken{AccessorId: "a"})},
		{"ACL policy repeated", record(&pb.SnapshotHeader{Format: snapshot.StateFormatACL, Revision: 9, AclPolicies: 2}, &pb.ACLPolicy{Name: "p"}, &pb.ACLPolicy{Name: "p"})},
		{"more records than data", record(&pb.SnapshotHeader{Format: snapshot.StateFormat, Revision: 9, Nodes: 1, Instances: 1000000}, &pb.Node{Name: "n1"})},
		{"instance without id", record(&pb.SnapshotHeader{Format: snapshot.StateFormat, Revision: 9, Instances: 1}, &pb.Instance{Service: "api"})},
		{"oversized record", append([]byte(snapshot.StateMagic), 0xff, 0xff, 0xff, 0xff, 0x0f)},
		{"truncated by one byte", good[:len(good)-1]},
	}
	// Every shorter prefix of a good snapshot is a truncated snapshot.
	for n := 0; n < len(good); n += 1 + n/50 {
		tests = append(tests, struct {
			name string
			data []byte
		}{fmt.Sprintf("truncated to %d of %d", n, len(good)), good[:n]})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newFSMDriver(t, 64)
			d.mustApply(sessionCreateCmd("s9", "n9"))
			d.mustApply(registerCmd(withSession(testInstance("keep", "1", "n9"), "s9")))
			d.mustApply(nodeUpsertCmd(&pb.Node{Name: "n9"}))
			before := stateOf(d.fsm)
			w := d.fsm.Watch("", before.revision)
			rc := &closeTracker{Reader: bytes.NewReader(tc.data)}
			if err := d.fsm.Restore(rc); err == nil {
				t.Fatal("Restore accepted a bad snapshot")
			}
			if !rc.closed {
				t.Error("Restore did not close the snapshot reader")
			}
			if diff := diffStates(before, stateOf(d.fsm)); diff != "" {
				t.Errorf("a failed Restore changed the state:\n%s", diff)
			}
			if resps := drainWatcher(t, w); len(resps) != 0 {
				t.Errorf("a failed Restore disturbed watchers: %v", resps)
			}
		})
	}
}

type closeTracker struct {
	io.Reader
	closed bool
}

func (c *closeTracker) Close() error { c.closed = true; return nil }

func withRequestID(cmd *pb.Command, id string) *pb.Command {
	cmd.RequestId = id
	return cmd
}

// TestFSMRequestIDs: an entry whose request id was applied before answers
// with the first result (Duplicate) and changes nothing.
func TestFSMRequestIDs(t *testing.T) {
	d := newFSMDriver(t, 64)
	reg := withRequestID(registerCmd(testInstance("api", "1", "n1")), "r1")
	first := d.mustApply(reg)
	if _, err := d.apply(withRequestID(deregisterCmd("api", "nope"), "r2")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("first deregister of an unknown instance: %v, want ErrNotFound", err)
	}
	notFound := d.next - 1
	rec := recordEvents(t, d.fsm)

	steps := []struct {
		name    string
		cmd     *pb.Command
		wantRev uint64 // the first application's revision
		wantErr error
	}{
		{"retried register", reg, first, nil},
		{"other command, same id", withRequestID(deregisterCmd("api", "1"), "r1"), first, nil},
		{"retried rejection", withRequestID(deregisterCmd("api", "nope"), "r2"), notFound, ErrNotFound},
	}
	for _, step := range steps {
		before := stateOf(d.fsm)
		l := d.nextLog(step.cmd)
		resp := d.fsm.Apply(l)
		dup, ok := resp.(Duplicate)
		if !ok {
			t.Errorf("%s: response %T %v, want a Duplicate", step.name, resp, resp)
			continue
		}
		if dup.Revision != step.wantRev || !errors.Is(dup.Err, step.wantErr) || (step.wantErr == nil && dup.Err != nil) {
			t.Errorf("%s: Duplicate{%d, %v}, want {%d, %v}", step.name, dup.Revision, dup.Err, step.wantRev, step.wantErr)
		}
		after := stateOf(d.fsm)
		if after.revision != l.Index {
			t.Errorf("%s: revision %d, want %d", step.name, after.revision, l.Index)
		}
		after.revision = before.revision
		if diff := diffStates(before, after); diff != "" {
			t.Errorf("%s: a duplicate changed the state:\n%s", step.name, diff)
		}
		if evs := rec.next(); len(evs) != 0 {
			t.Errorf("%s: a duplicate published %v", step.name, evs)
		}
	}

	// Without an id nothing is deduplicated.
	plain := registerCmd(testInstance("api", "1", "n1"))
	d.mustApply(plain)
	again := d.mustApply(plain)
	if got := d.fsm.Instance("api", "1").ModRevision; got != again {
		t.Errorf("a command without request id applied twice: mod_revision %d, want %d", got, again)
	}

	// A duplicate inside one batch is caught too.
	batch := []*raft.Log{
		d.nextLog(withRequestID(registerCmd(testInstance("db", "1", "n1")), "r3")),
		d.nextLog(withRequestID(registerCmd(testInstance("db", "1", "n1")), "r3")),
	}
	if resps := d.fsm.ApplyBatch(batch); resps[0] != nil || resps[1] != (Duplicate{Revision: batch[0].Index}) {
		t.Errorf("batch with a repeated id answered %v", resps)
	}

}

// TestFSMRequestIDsAcrossRestore: duplicate detection must not depend on
// whether a replica was rebuilt from a snapshot, or two replicas would
// answer one retried entry differently and diverge.
func TestFSMRequestIDsAcrossRestore(t *testing.T) {
	a := newFSMDriver(t, 64)
	reg := withRequestID(registerCmd(testInstance("api", "1", "n1")), "r1")
	a.mustApply(reg)
	a.mustApply(registerCmd(testInstance("api", "2", "n1")))
	snap := snapshotBytes(t, a.fsm)

	// b restores a's snapshot; c has applied a request a never saw first.
	b := NewFSM(64)
	c := NewFSM(64)
	c.Apply(commandLog(t, 1, withRequestID(registerCmd(testInstance("db", "9", "n1")), "r9")))
	for _, f := range []*FSM{b, c} {
		if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
			t.Fatal(err)
		}
	}
	// The same entries commit on every replica after the snapshot.
	retry := commandLog(t, a.next, reg)
	fresh := commandLog(t, a.next+1, withRequestID(registerCmd(testInstance("db", "9", "n1")), "r9"))
	for _, l := range []*raft.Log{retry, fresh} {
		want := describeResponse(t, a.fsm.Apply(l))
		for name, f := range map[string]*FSM{"restored": b, "restored over other requests": c} {
			if got := describeResponse(t, f.Apply(l)); got != want {
				t.Errorf("entry %d on the %s replica: %s; the original answered %s", l.Index, name, got, want)
			}
		}
	}
	for name, f := range map[string]*FSM{"restored": b, "restored over other requests": c} {
		if diff := diffStates(stateOf(a.fsm), stateOf(f)); diff != "" {
			t.Errorf("the %s replica diverged:\n%s", name, diff)
		}
	}
}

// ---- random command sequences ----

var (
	randServices = []string{"api", "db", "cache"}
	randNodes    = []string{"n1", "n2", "n3"}
	// A session always lives on the same node, as the agent makes it.
	randSessions = map[string]string{"s1": "n1", "s2": "n2", "s3": "n3", "s4": "n1"}
	randHealth   = []pb.Health{pb.Health_PASSING, pb.Health_WARNING, pb.Health_CRITICAL}
	randOutputs  = []string{"", "ttl expired", "connection refused"}
)

func randPick[T any](rng *rand.Rand, s []T) T { return s[rng.IntN(len(s))] }

func randSessionID(rng *rand.Rand) string { return fmt.Sprintf("s%d", 1+rng.IntN(len(randSessions))) }

func randRef(rng *rand.Rand) *pb.InstanceRef {
	return instRef(randPick(rng, randServices), fmt.Sprint(rng.IntN(10)))
}

// randomCommand returns a command over a small key space, so that commands
// collide: re-registrations, deregistrations of unknown instances, sessions
// destroyed under their instances, and some that must be rejected.
func randomCommand(rng *rand.Rand) *pb.Command {
	switch p := rng.IntN(100); {
	case p < 40:
		ref := randRef(rng)
		inst := testInstance(ref.Service, ref.Id, randPick(rng, randNodes))
		inst.Health = randPick(rng, randHealth)
		inst.Address = fmt.Sprintf("10.0.%d.%d:80", rng.IntN(4), rng.IntN(4))
		if rng.IntN(3) == 0 {
			inst.Session = randSessionID(rng)
			inst.Node = randSessions[inst.Session]
		}
		if rng.IntN(3) == 0 {
			inst.Check = &pb.Check{Ttl: durationpb.New(time.Duration(1+rng.IntN(30)) * time.Second)}
		}
		return registerCmd(inst)
	case p < 50:
		ref := randRef(rng)
		return deregisterCmd(ref.Service, ref.Id)
	case p < 62:
		refs := make([]*pb.InstanceRef, 1+rng.IntN(3))
		for i := range refs {
			refs[i] = randRef(rng)
		}
		return setHealthCmd(randPick(rng, randHealth), randPick(rng, randOutputs), refs...)
	case p < 67:
		return setNodeHealthCmd(randPick(rng, randNodes), randPick(rng, randHealth), randPick(rng, randOutputs))
	case p < 77:
		id := randSessionID(rng)
		return sessionCreateCmd(id, randSessions[id])
	case p < 83:
		return sessionDestroyCmd(randSessionID(rng), randSessionID(rng))
	case p < 90:
		return nodeUpsertCmd(&pb.Node{Name: randPick(rng, randNodes), Zone: fmt.Sprint(rng.IntN(3)), Health: randPick(rng, randHealth)})
	case p < 93:
		return nodeRemoveCmd(randPick(rng, randNodes))
	case p < 95:
		return &pb.Command{} // no kind: rejected
	default:
		return registerCmd(testInstance("", "x", "n1")) // rejected
	}
}

// randomLogs returns n committed entries with increasing indexes, some gaps
// (entries raft keeps to itself), configuration entries, garbage, and
// request ids that repeat.
func randomLogs(tb testing.TB, rng *rand.Rand, n int) []*raft.Log {
	logs := make([]*raft.Log, 0, n)
	index := uint64(1)
	for range n {
		if rng.IntN(10) == 0 {
			index += uint64(1 + rng.IntN(3))
		}
		var l *raft.Log
		switch p := rng.IntN(100); {
		case p < 2:
			l = &raft.Log{Index: index, Type: raft.LogConfiguration, Data: []byte("conf")}
		case p < 4:
			l = &raft.Log{Index: index, Type: raft.LogCommand, Data: []byte{0x0a, 0xff, 0x01, byte(rng.IntN(256))}}
		default:
			cmd := randomCommand(rng)
			cmd.Time = int64(index) * 1000
			if rng.IntN(3) == 0 { // retried requests, and ids reused by other commands
				cmd.RequestId = fmt.Sprintf("req-%d", rng.IntN(40))
			}
			l = commandLog(tb, index, cmd)
		}
		logs = append(logs, l)
		index++
	}
	return logs
}

func describeResponse(tb testing.TB, resp any) string {
	if d, ok := resp.(Duplicate); ok {
		return fmt.Sprintf("duplicate of %d: %v", d.Revision, d.Err)
	}
	if err := responseError(tb, resp); err != nil {
		return "error: " + err.Error()
	}
	return "ok"
}

// TestFSMApplyBatchEquivalence applies the same random entries to two FSMs,
// one entry at a time and in random batches: states, responses and event
// streams must be identical, and the events must rebuild the state.
func TestFSMApplyBatchEquivalence(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0x5eed))
			logs := randomLogs(t, rng, 2000)
			single, batched := NewFSM(1<<16), NewFSM(1<<16)
			wSingle, wBatched := single.Watch("", 0), batched.Watch("", 0)
			drainWatcher(t, wSingle) // the empty initial snapshots
			drainWatcher(t, wBatched)

			var singleResps, batchedResps []string
			for i, l := range logs {
				singleResps = append(singleResps, describeResponse(t, single.Apply(l)))
				if i%250 == 0 {
					checkInvariants(t, single)
				}
			}
			for rest := logs; len(rest) > 0; {
				n := min(len(rest), 1+rng.IntN(60))
				for _, r := range batched.ApplyBatch(rest[:n]) {
					batchedResps = append(batchedResps, describeResponse(t, r))
				}
				rest = rest[n:]
			}

			if !slices.Equal(singleResps, batchedResps) {
				for i := range singleResps {
					if singleResps[i] != batchedResps[i] {
						t.Fatalf("entry %d: Apply answered %q, ApplyBatch %q", logs[i].Index, singleResps[i], batchedResps[i])
					}
				}
			}
			want := stateOf(single)
			if want.revision != logs[len(logs)-1].Index {
				t.Errorf("Revision() = %d, want the last index %d", want.revision, logs[len(logs)-1].Index)
			}
			if diff := diffStates(want, stateOf(batched)); diff != "" {
				t.Fatalf("ApplyBatch state differs from Apply state:\n%s", diff)
			}
			checkInvariants(t, single)
			checkInvariants(t, batched)

			evSingle := watchedEvents(t, wSingle)
			evBatched := watchedEvents(t, wBatched)
			if len(evSingle) != len(evBatched) {
				t.Fatalf("Apply published %d events, ApplyBatch %d", len(evSingle), len(evBatched))
			}
			for i := range evSingle {
				if !proto.Equal(evSingle[i], evBatched[i]) {
					t.Fatalf("event %d: Apply published {%v}, ApplyBatch {%v}", i, compactText(evSingle[i]), compactText(evBatched[i]))
				}
			}
			rebuilt := make(map[string]*pb.Instance)
			applyEvents(rebuilt, evSingle)
			if diff := diffInstanceMap(want.instances, rebuilt); diff != "" {
				t.Errorf("events do not rebuild the state: %s", diff)
			}
			if w := wSingle.Revision(); w != want.revision {
				t.Errorf("watcher revision %d, FSM revision %d", w, want.revision)
			}

			// The final state survives a snapshot round trip.
			restored := NewFSM(1)
			if err := restored.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, single)))); err != nil {
				t.Fatal(err)
			}
			if diff := diffStates(want, stateOf(restored)); diff != "" {
				t.Errorf("snapshot round trip:\n%s", diff)
			}
			checkInvariants(t, restored)
		})
	}
}

// watchedEvents drains w, which must not need a snapshot.
func watchedEvents(t *testing.T, w *Watcher) []*pb.Event {
	t.Helper()
	resps := drainWatcher(t, w)
	var last uint64
	for _, r := range resps {
		if r.Snapshot {
			t.Fatal("watcher fell back to a snapshot; the ring is too small for this test")
		}
		for _, e := range r.Events {
			if e.Revision < last {
				t.Fatalf("event revision %d after %d", e.Revision, last)
			}
			last = e.Revision
		}
	}
	return flattenEvents(resps)
}

// applyEvents applies events to a map keyed "service/id".
func applyEvents(m map[string]*pb.Instance, evs []*pb.Event) {
	for _, e := range evs {
		key := e.Instance.Service + "/" + e.Instance.Id
		switch e.Type {
		case pb.Event_PUT:
			m[key] = e.Instance
		case pb.Event_DELETE:
			delete(m, key)
		}
	}
}

// diffInstanceMap compares a rebuilt map with the FSM's instances.
func diffInstanceMap(want []*pb.Instance, got map[string]*pb.Instance) string {
	if len(want) != len(got) {
		return fmt.Sprintf("%d instances, want %d", len(got), len(want))
	}
	for _, inst := range want {
		key := inst.Service + "/" + inst.Id
		if g, ok := got[key]; !ok || !proto.Equal(g, inst) {
			return fmt.Sprintf("%s is {%v}, want {%v}", key, compactText(g), compactText(inst))
		}
	}
	return ""
}

// FuzzFSMApply: any entry data is rejected or applied, never a panic, and a
// rejection leaves the state as it was.
func FuzzFSMApply(f *testing.F) {
	rng := rand.New(rand.NewPCG(7, 7))
	for range 40 {
		b, _ := proto.Marshal(randomCommand(rng))
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte("\xff\xff\xff\xff"))
	f.Add([]byte{0x0a, 0x80, 0x80, 0x80, 0x80, 0x10})
	f.Fuzz(func(t *testing.T, data []byte) {
		d := newFSMDriver(t, 16)
		d.mustApply(nodeUpsertCmd(&pb.Node{Name: "n1"}))
		d.mustApply(sessionCreateCmd("s1", "n1"))
		d.mustApply(registerCmd(withSession(testInstance("api", "1", "n1"), "s1")))
		d.mustApply(registerCmd(testInstance("db", "0", "n2")))
		before := stateOf(d.fsm)
		resp := d.fsm.Apply(&raft.Log{Index: 100, Type: raft.LogCommand, Data: data})
		if r := d.fsm.Revision(); r != 100 {
			t.Fatalf("Revision() = %d, want 100", r)
		}
		if err := responseError(t, resp); err != nil {
			after := stateOf(d.fsm)
			after.revision = before.revision
			if diff := diffStates(before, after); diff != "" {
				t.Fatalf("rejected entry (%v) changed the state:\n%s", err, diff)
			}
		}
		checkInvariants(t, d.fsm)
	})
}

// TestFSMNodeRemoveTakesInstancesBoundToItsSessions: an instance bound to a
// session of a removed agent goes with the session, whichever agent owns it
// (it would otherwise stay forever, and snapshots would hold an instance
// whose session does not exist).
func TestFSMNodeRemoveTakesInstancesBoundToItsSessions(t *testing.T) {
	d := populatedFSM(t)
	d.mustApply(registerCmd(withSession(testInstance("api", "0", "n1"), "s2"))) // owned by n1, bound to n2's session
	d.mustApply(nodeRemoveCmd("n2"))
	if inst := d.fsm.Instance("api", "0"); inst != nil {
		t.Fatalf("api/0, bound to removed agent n2's session s2, is still there: %v", inst)
	}
	checkInvariants(t, d.fsm)
	g := NewFSM(16)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, d.fsm)))); err != nil {
		t.Fatalf("restore the snapshot: %v", err)
	}
}

// TestFSMNodeRemoveKeepUnbound: a reaped agent's removal (keep_unbound)
// takes its node record, its sessions and the instances bound to them, and
// keeps its instances without a session, critical with the given output.
func TestFSMNodeRemoveKeepUnbound(t *testing.T) {
	d := newFSMDriver(t, 64)
	d.mustApply(nodeUpsertCmd(&pb.Node{Name: "n1", Health: pb.Health_PASSING}))
	d.mustApply(sessionCreateCmd("s1", "n1"))
	d.mustApply(registerCmd(withSession(testInstance("api", "1", "n1"), "s1")))
	d.mustApply(registerCmd(testInstance("api", "2", "n1")))
	d.mustApply(registerCmd(testInstance("db", "7", "n1")))
	d.mustApply(registerCmd(testInstance("db", "8", "n2")))
	rec := recordEvents(t, d.fsm)

	const output = "removed with its agent n1: failed for 31s"
	rev := d.mustApply(&pb.Command{Kind: &pb.Command_NodeRemove{NodeRemove: &pb.NodeRemove{Name: "n1", KeepUnbound: true, Output: output}}})
	want := []string{fmt.Sprintf("DELETE api/1@%d", rev), fmt.Sprintf("PUT api/2@%d", rev), fmt.Sprintf("PUT db/7@%d", rev)}
	if evs := rec.next(); !slices.Equal(evs, want) {
		t.Errorf("NodeRemove events = %v, want %v", evs, want)
	}
	if d.fsm.Node("n1") != nil || d.fsm.NodeHasSessions("n1") || len(d.fsm.Sessions()) != 0 {
		t.Errorf("n1's node record (%v) or sessions (%v) are still there", d.fsm.Node("n1"), d.fsm.Sessions())
	}
	for _, ref := range [][2]string{{"api", "2"}, {"db", "7"}} {
		in := d.fsm.Instance(ref[0], ref[1])
		if in == nil || in.Health != pb.Health_CRITICAL || in.HealthOutput != output || in.ModRevision != rev {
			t.Errorf("%s/%s = %v, want kept, critical, output %q, revision %d", ref[0], ref[1], in, output, rev)
		}
	}
	if in := d.fsm.Instance("db", "8"); in == nil || in.Health != pb.Health_PASSING {
		t.Errorf("db/8 of another agent = %v, want it untouched", in)
	}
	// Again: nothing left to change, no event.
	d.mustApply(&pb.Command{Kind: &pb.Command_NodeRemove{NodeRemove: &pb.NodeRemove{Name: "n1", KeepUnbound: true, Output: output}}})
	if evs := rec.next(); len(evs) != 0 {
		t.Errorf("a second removal's events = %v, want none", evs)
	}
	checkInvariants(t, d.fsm)

	// Without keep_unbound the kept instances go.
	rev = d.mustApply(nodeRemoveCmd("n1"))
	want = []string{fmt.Sprintf("DELETE api/2@%d", rev), fmt.Sprintf("DELETE db/7@%d", rev)}
	if evs := rec.next(); !slices.Equal(evs, want) {
		t.Errorf("removal without keep_unbound: events = %v, want %v", evs, want)
	}
	checkInvariants(t, d.fsm)
}

// TestFSMConditionalWritesLeaveAChangedInstance: a Deregister or SetHealth
// naming a mod_revision changes the instance only while it is that
// version; one registered again since is left as it is, the Deregister
// answering FailedPrecondition, and every replica applying the same log
// agrees.
func TestFSMConditionalWritesLeaveAChangedInstance(t *testing.T) {
	d := newFSMDriver(t, 64)
	judged := d.mustApply(registerCmd(testInstance("api", "1", "n1")))
	d.mustApply(registerCmd(testInstance("api", "2", "n1")))
	again := d.mustApply(registerCmd(testInstance("api", "1", "n1"))) // registered again
	api2 := d.fsm.Instance("api", "2").ModRevision

	stale := &pb.InstanceRef{Service: "api", Id: "1", ModRevision: judged}
	current := &pb.InstanceRef{Service: "api", Id: "2", ModRevision: api2}
	d.mustApply(setHealthCmd(pb.Health_CRITICAL, "TTL expired", stale, current))
	if got := d.fsm.Instance("api", "1"); got.Health != pb.Health_PASSING || got.ModRevision != again {
		t.Fatalf("api/1, registered again at %d after the version judged (%d), is %v at %d; want it left passing",
			again, judged, got.Health, got.ModRevision)
	}
	if got := d.fsm.Instance("api", "2"); got.Health != pb.Health_CRITICAL {
		t.Fatalf("api/2, unchanged since it was judged, is %v; want critical", got.Health)
	}

	_, err := d.apply(&pb.Command{Kind: &pb.Command_Deregister{Deregister: stale}})
	if !errors.Is(err, ErrFailedPrecondition) || !strings.Contains(err.Error(), "api/1") {
		t.Fatalf("removing a version replaced since: %v; want FailedPrecondition naming api/1", err)
	}
	if d.fsm.Instance("api", "1") == nil {
		t.Fatal("removing the version judged removed the newer registration")
	}
	d.mustApply(&pb.Command{Kind: &pb.Command_Deregister{Deregister: &pb.InstanceRef{Service: "api", Id: "1", ModRevision: again}}})
	if d.fsm.Instance("api", "1") != nil {
		t.Fatal("a removal naming the current version left the instance")
	}
	checkInvariants(t, d.fsm)
}
