package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/snapshot"
)

// fillRequests applies n distinct requests (node upserts) in batches.
func fillRequests(d *fsmDriver, n int) {
	for n > 0 {
		cmds := make([]*pb.Command, min(n, 1000))
		for i := range cmds {
			cmds[i] = withRequestID(nodeUpsertCmd(&pb.Node{Name: "n1"}), fmt.Sprint("fill-", d.next+uint64(i)))
		}
		d.mustApplyBatch(cmds...)
		n -= len(cmds)
	}
}

// TestFSMRequestIDsLastForTheDedupWindow: an id is remembered for
// DedupWindow of leader clock however many requests follow it, and a
// retry arriving after the window is applied again.
func TestFSMRequestIDsLastForTheDedupWindow(t *testing.T) {
	d := newFSMDriver(t, 64)
	reg := withRequestID(registerCmd(testInstance("api", "1", "n1")), "r1")
	first := d.mustApply(reg)
	start := reg.Time
	fillRequests(d, 20000)

	retry := withRequestID(registerCmd(testInstance("api", "1", "n1")), "r1")
	retry.Time = start + int64(DedupWindow) // the last moment of the window
	l := d.nextLog(retry)
	if dup, ok := d.fsm.Apply(l).(Duplicate); !ok || dup.Revision != first {
		t.Fatalf("retry within the window after 20000 other requests: %v, want Duplicate at %d", dup, first)
	}
	if got := d.fsm.Instance("api", "1").ModRevision; got != first {
		t.Fatalf("retry within the window applied again: mod_revision %d, want %d", got, first)
	}

	late := withRequestID(registerCmd(testInstance("api", "1", "n1")), "r1")
	late.Time = start + int64(DedupWindow) + 1
	rev, err := d.apply(late)
	if err != nil || d.fsm.Instance("api", "1").ModRevision != rev {
		t.Fatalf("retry after the window: %v, mod_revision %d; want it applied anew at %d",
			err, d.fsm.Instance("api", "1").ModRevision, rev)
	}
}

// TestFSMRequestIDsClockNeverGoesBack: a leader whose clock is behind the
// previous one's does not extend the window of older ids.
func TestFSMRequestIDsClockNeverGoesBack(t *testing.T) {
	d := newFSMDriver(t, 64)
	reg := withRequestID(registerCmd(testInstance("api", "1", "n1")), "r1")
	d.mustApply(reg)
	ahead := withRequestID(nodeUpsertCmd(&pb.Node{Name: "n1"}), "r2")
	ahead.Time = reg.Time + int64(DedupWindow) + 1 // forgets r1
	d.mustApply(ahead)
	behind := withRequestID(registerCmd(testInstance("api", "1", "n1")), "r1")
	behind.Time = reg.Time + 1 // a new leader's clock, behind
	wantAppliedAnew(t, d, behind, "after the clock passed its window")
}

// TestFSMRequestIDsAreBounded: past the bound the oldest ids are forgotten
// first, even within the window.
func TestFSMRequestIDsAreBounded(t *testing.T) {
	d := newFSMDriver(t, 64)
	d.fsm.requests.max = 100
	reg := withRequestID(registerCmd(testInstance("api", "1", "n1")), "r1")
	d.mustApply(reg)
	r2 := withRequestID(nodeUpsertCmd(&pb.Node{Name: "n2"}), "r2")
	d.mustApply(r2)
	fillRequests(d, 98)
	if _, ok := d.fsm.Apply(d.nextLog(reg)).(Duplicate); !ok {
		t.Fatal("r1 forgotten with 100 ids remembered")
	}
	fillRequests(d, 1)
	if _, ok := d.fsm.Apply(d.nextLog(r2)).(Duplicate); !ok {
		t.Fatal("r2 forgotten while r1 was the oldest")
	}
	if got := d.fsm.requests.len(); got != 100 {
		t.Errorf("%d ids remembered, want the bound 100", got)
	}
	wantAppliedAnew(t, d, reg, "past the bound")
}

// TestFSMRequestWindowSurvivesRestore: a replica rebuilt from a snapshot
// forgets each id at the same entry as the replica that wrote it.
func TestFSMRequestWindowSurvivesRestore(t *testing.T) {
	a := newFSMDriver(t, 64)
	reg := withRequestID(registerCmd(testInstance("api", "1", "n1")), "r1")
	a.mustApply(reg)
	// The clock moves on without a request id to remember.
	plain := registerCmd(testInstance("api", "2", "n1"))
	plain.Time = reg.Time + int64(DedupWindow)/2
	a.mustApply(plain)
	b := NewFSM(64)
	restoreBytes(t, b, snapshotBytes(t, a.fsm))

	// A new leader whose clock is behind applies r3; r3's window starts at
	// the FSM clock, which only the snapshot's stored clock tells b.
	r3 := withRequestID(registerCmd(testInstance("api", "3", "n1")), "r3")
	r3.Time = reg.Time + 1000
	retry := withRequestID(registerCmd(testInstance("api", "3", "n1")), "r3")
	retry.Time = r3.Time + int64(DedupWindow) + 1
	for _, cmd := range []*pb.Command{r3, retry} {
		l := a.nextLog(cmd)
		want := describeResponse(t, a.fsm.Apply(l))
		if got := describeResponse(t, b.Apply(l)); got != want {
			t.Errorf("entry %d (%s at %d) on the restored replica: %s, the original answered %s",
				l.Index, cmd.RequestId, cmd.Time, got, want)
		}
	}
	if diff := diffStates(stateOf(a.fsm), stateOf(b)); diff != "" {
		t.Errorf("the restored replica diverged:\n%s", diff)
	}
	if got, want := b.requests.records(), a.fsm.requests.records(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("restored request log %v, want %v", got, want)
	}
}

// TestFSMSnapshotCapturesRequestsInOneAllocation: Snapshot, which holds
// every write back while it runs, captures the remembered requests in
// one slice, not a record each (a full log is a million); Persist writes
// the same records as before.
func TestFSMSnapshotCapturesRequestsInOneAllocation(t *testing.T) {
	d := newFSMDriver(t, 64)
	const n = 3000
	for i := range n {
		cmd := withRequestID(registerCmd(testInstance("api", "1", "n1")), fmt.Sprintf("r%d", i))
		if i%3 == 0 {
			cmd.Kind = &pb.Command_Deregister{Deregister: instRef("missing", "x")} // a remembered error
		}
		if _, err := d.apply(cmd); (err != nil) != (i%3 == 0) {
			t.Fatalf("command %d: %v", i, err)
		}
	}
	if got := d.fsm.requests.len(); got != n {
		t.Fatalf("the request log holds %d ids, want %d", got, n)
	}
	if allocs := testing.AllocsPerRun(5, func() { d.fsm.Snapshot() }); allocs > 50 {
		t.Errorf("Snapshot of a registry remembering %d requests allocates %.0f times, want a few whatever their number", n, allocs)
	}
	b := NewFSM(64)
	restoreBytes(t, b, snapshotBytes(t, d.fsm))
	if got, want := b.requests.records(), d.fsm.requests.records(); fmt.Sprint(got) != fmt.Sprint(want) || len(got) != n {
		t.Errorf("restored request log of %d records differs from the %d written", len(got), len(want))
	}
}

func restoreBytes(tb testing.TB, f *FSM, data []byte) {
	tb.Helper()
	if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		tb.Fatalf("Restore: %v", err)
	}
}

// TestFSMRequestIDsFromUntimedSnapshot: ids restored from a snapshot that
// kept no times (format 1) are remembered for a window starting at the
// first command after the restore.
func TestFSMRequestIDsFromUntimedSnapshot(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(snapshot.StateMagic)
	for _, m := range []proto.Message{
		&pb.SnapshotHeader{Format: 1, Revision: 10, Requests: 1},
		&pb.RequestRecord{Id: "r1", Revision: 7},
	} {
		if _, err := protodelim.MarshalTo(&b, m); err != nil {
			t.Fatal(err)
		}
	}
	d := newFSMDriver(t, 64)
	restoreBytes(t, d.fsm, b.Bytes())
	d.next = 11
	start := d.mustApply(nodeUpsertCmd(&pb.Node{Name: "n1"})) * 1000 // the driver's clock
	for _, tc := range []struct {
		at   int64
		want string
	}{
		{int64(start) + int64(DedupWindow), "duplicate of 7: <nil>"},
		{int64(start) + int64(DedupWindow) + 1, "applied"},
	} {
		cmd := withRequestID(registerCmd(testInstance("api", "1", "n1")), "r1")
		cmd.Time = tc.at
		got := "applied"
		if dup, ok := d.fsm.Apply(d.nextLog(cmd)).(Duplicate); ok {
			got = fmt.Sprintf("duplicate of %d: %v", dup.Revision, dup.Err)
		}
		if got != tc.want {
			t.Errorf("retry at %d: %s, want %s", tc.at, got, tc.want)
		}
	}
}

// TestFSMRequestRecordsStoreReasonCodes: a snapshot remembers a failed
// request's error by its apierr reason code, not by the sentinel's text,
// and a replica restored from it answers a retry with the same sentinel.
func TestFSMRequestRecordsStoreReasonCodes(t *testing.T) {
	a := newFSMDriver(t, 64)
	if _, err := a.apply(withRequestID(deregisterCmd("api", "nope"), "r1")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deregister of an unknown instance: %v, want ErrNotFound", err)
	}
	recs := a.fsm.requests.records()
	if len(recs) != 1 || recs[0].ErrorReason != "NOT_FOUND" || recs[0].ErrorMessage != "not found: instance api/nope" {
		t.Fatalf("request records %v, want r1 with reason code NOT_FOUND and the error's message", recs)
	}

	b := NewFSM(64)
	restoreBytes(t, b, snapshotBytes(t, a.fsm))
	l := a.nextLog(withRequestID(deregisterCmd("api", "nope"), "r1"))
	dup, ok := b.Apply(l).(Duplicate)
	if !ok || !errors.Is(dup.Err, ErrNotFound) || dup.Err.Error() != "not found: instance api/nope" {
		t.Fatalf("retry on the restored replica: %#v, want a Duplicate of ErrNotFound with the first message", dup)
	}
}

// TestFSMRequestRecordWithTextReasonRestores: snapshots written before
// reason codes hold the sentinel's text as the reason; restoring one
// rebuilds the same sentinel as its code does.
func TestFSMRequestRecordWithTextReasonRestores(t *testing.T) {
	for _, sentinel := range []error{ErrNotFound, ErrAlreadyExists, ErrInvalidArgument, ErrQuotaExceeded, apierr.ErrFailedPrecondition} {
		msg := sentinel.Error() + ": detail"
		for _, reason := range []string{sentinel.Error(), apierr.Code(sentinel)} {
			err := requestErr(&pb.RequestRecord{Id: "r1", Revision: 3, ErrorReason: reason, ErrorMessage: msg})
			if !errors.Is(err, sentinel) || err.Error() != msg {
				t.Errorf("record with reason %q: %v, want %v with message %q", reason, err, sentinel, msg)
			}
		}
	}
	if err := requestErr(&pb.RequestRecord{Id: "r1", Revision: 3}); err != nil {
		t.Errorf("record of a success: %v, want nil", err)
	}
}

// TestFSMRestoresSnapshotWithTextReasons restores a snapshot written
// before reason codes (testdata/snapshot-text-reasons.snap: r1 registered
// api/1 at revision 1, r2 failed to deregister api/nope with "not found"
// as its reason): a retry of r2 is answered with ErrNotFound, and the next
// snapshot stores the reason code.
func TestFSMRestoresSnapshotWithTextReasons(t *testing.T) {
	data, err := os.ReadFile("testdata/snapshot-text-reasons.snap")
	if err != nil {
		t.Fatal(err)
	}
	d := newFSMDriver(t, 64)
	restoreBytes(t, d.fsm, data)
	d.next = d.fsm.Revision() + 1

	for _, tc := range []struct {
		cmd  *pb.Command
		want string
	}{
		{withRequestID(registerCmd(testInstance("api", "1", "n1")), "r1"), "duplicate of 1: <nil>"},
		{withRequestID(deregisterCmd("api", "nope"), "r2"), "duplicate of 2: not found: instance api/nope"},
	} {
		resp := d.fsm.Apply(d.nextLog(tc.cmd))
		if got := describeResponse(t, resp); got != tc.want {
			t.Errorf("retry of %s: %s, want %s", tc.cmd.RequestId, got, tc.want)
		}
		if dup, ok := resp.(Duplicate); ok && dup.Err != nil && !errors.Is(dup.Err, ErrNotFound) {
			t.Errorf("retry of %s: %v does not wrap ErrNotFound", tc.cmd.RequestId, dup.Err)
		}
	}
	recs := d.fsm.requests.records()
	if len(recs) != 2 || recs[1].Id != "r2" || recs[1].ErrorReason != "NOT_FOUND" {
		t.Errorf("request records after restore %v, want r2 stored with reason code NOT_FOUND", recs)
	}
}

// stepped returns cmd applied at time at, as a leader of a cluster at
// state machine version 3 stamps it (clock_step).
func stepped(cmd *pb.Command, at int64) *pb.Command {
	cmd.Time, cmd.ClockStep = at, true
	return cmd
}

// TestFSMRequestIDsOutliveALeaderWhoseClockRunsAhead: with clock_step, a
// new leader whose clock runs an hour ahead of the old one's ages the
// remembered ids by at most a second at the change, then by the time that
// passes on its own clock: a retry across the change is still answered
// as a duplicate, and the id is forgotten once a window has passed on the
// new leader's clock. Without clock_step the jump forgets it at once.
func TestFSMRequestIDsOutliveALeaderWhoseClockRunsAhead(t *testing.T) {
	const hour = int64(time.Hour)
	for _, step := range []bool{true, false} {
		d := newFSMDriver(t, 64)
		t0 := int64(1_700_000_000) * int64(time.Second)
		cmd := func(c *pb.Command, at int64) *pb.Command {
			c.Time, c.ClockStep = at, step
			return c
		}
		first := d.mustApply(cmd(withRequestID(registerCmd(testInstance("api", "1", "n1")), "r1"), t0))
		// The new leader's first entries, an hour ahead.
		d.mustApply(cmd(nodeUpsertCmd(&pb.Node{Name: "n2"}), t0+hour+int64(3*time.Second)))
		l := d.nextLog(cmd(withRequestID(registerCmd(testInstance("api", "1", "n1")), "r1"), t0+hour+int64(4*time.Second)))
		resp := d.fsm.Apply(l)
		dup, isDup := resp.(Duplicate)
		if step && (!isDup || dup.Revision != first) {
			t.Fatalf("with clock_step, a retry right after a leader an hour ahead took over: %v; want the first answer (revision %d)", resp, first)
		}
		if !step && isDup {
			t.Fatal("without clock_step the hour's jump kept r1: the test no longer shows what clock_step changes")
		}
		if !step {
			continue
		}
		// A window passes on the new leader's clock, an entry a second.
		at := d.stepSeconds(t0+hour+int64(4*time.Second), int(DedupWindow/time.Second))
		wantAppliedAnew(t, d, stepped(withRequestID(registerCmd(testInstance("api", "1", "n1")), "r1"), at+int64(time.Second)),
			"once a window has passed on the new leader's clock")
	}
}

// TestFSMRequestIDsAgeWhenALeaderClockRunsBehind: with clock_step, a new
// leader whose clock is an hour behind ages the ids by the time passing on
// its own clock, not only once its clock has caught up with the old one's.
func TestFSMRequestIDsAgeWhenALeaderClockRunsBehind(t *testing.T) {
	d := newFSMDriver(t, 64)
	t0 := int64(1_700_000_000) * int64(time.Second)
	d.mustApply(stepped(withRequestID(registerCmd(testInstance("api", "1", "n1")), "r1"), t0))
	at := d.stepSeconds(t0-int64(time.Hour), int(DedupWindow/time.Second)+2)
	wantAppliedAnew(t, d, stepped(withRequestID(registerCmd(testInstance("api", "1", "n1")), "r1"), at+int64(time.Second)),
		"after a window on the clock of a leader an hour behind")
}

// TestFSMStepClockSurvivesRestore: a replica rebuilt from a snapshot moves
// the request clock as the one that wrote it, entry for entry (the
// snapshot carries the last command's time the next step is measured
// from).
func TestFSMStepClockSurvivesRestore(t *testing.T) {
	a := newFSMDriver(t, 64)
	t0 := int64(1_700_000_000) * int64(time.Second)
	a.mustApply(stepped(withRequestID(registerCmd(testInstance("api", "1", "n1")), "r1"), t0))
	a.mustApply(stepped(nodeUpsertCmd(&pb.Node{Name: "n2"}), t0+int64(500*time.Millisecond)))
	b := NewFSM(64)
	restoreBytes(t, b, snapshotBytes(t, a.fsm))
	at := t0 + int64(500*time.Millisecond)
	for i := range 5 {
		at += int64(300 * time.Millisecond)
		l := a.nextLog(stepped(withRequestID(nodeUpsertCmd(&pb.Node{Name: "n2"}), fmt.Sprint("s", i)), at))
		a.fsm.Apply(l)
		b.Apply(l)
		if a.fsm.requests.clock != b.requests.clock {
			t.Fatalf("after entry %d the restored replica's request clock is %d, the original's %d", l.Index, b.requests.clock, a.fsm.requests.clock)
		}
	}
	if got, want := b.requests.records(), a.fsm.requests.records(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("restored request log %v, want %v", got, want)
	}
}

// TestStoreStampsClockStepOnceEveryServerAppliesIt: a leader stamps
// clock_step on its entries only when ClusterFSMVersion says every Raft
// server applies version 3; older replicas would forget request ids at
// other entries.
func TestStoreStampsClockStepOnceEveryServerAppliesIt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version func() int
		want    bool
	}{
		{"every server at 3", func() int { return 3 }, true},
		{"a server at 2", func() int { return 2 }, false},
		{"not told", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testStoreConfig(t, t.TempDir(), slog.LevelWarn)
			cfg.ClusterFSMVersion = tc.version
			s := openStore(t, New(cfg))
			// A caller's (or a forwarding peer's) flag is not trusted.
			cmd := registerCmd(testInstance("api", "1", "n1"))
			cmd.ClockStep = !tc.want
			rev := mustStoreApply(t, s, cmd)
			if got := loggedCommand(t, s, rev); got.ClockStep != tc.want {
				t.Fatalf("entry %d has clock_step %v, want %v", rev, got.ClockStep, tc.want)
			}
		})
	}
}

// wantAppliedAnew applies cmd, a registration of api/1 with request id
// r1, and fails unless it was applied as a new write rather than answered
// as a duplicate.
func wantAppliedAnew(t *testing.T, d *fsmDriver, cmd *pb.Command, when string) {
	t.Helper()
	rev, err := d.apply(cmd)
	if err != nil || d.fsm.Instance("api", "1").ModRevision != rev {
		t.Fatalf("r1 %s: %v; want it applied anew at %d", when, err, rev)
	}
}

// stepSeconds applies n commands without a request id, a second apart on
// the stepped clock after at, and returns the last one's time.
func (d *fsmDriver) stepSeconds(at int64, n int) int64 {
	for range n {
		at += int64(time.Second)
		d.mustApply(stepped(nodeUpsertCmd(&pb.Node{Name: "n2"}), at))
	}
	return at
}

// TestStoreDropsConditionsUntilEveryServerAppliesThem: a Deregister or
// SetHealth keeps the version it is conditional on only when every Raft
// server applies state machine version 4; an older replica would ignore
// the condition and change the instance anyway, so the write goes
// unconditional, as older builds make it, rather than diverge replicas.
func TestStoreDropsConditionsUntilEveryServerAppliesThem(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version func() int
		keep    bool
	}{
		{"every server at 4", func() int { return 4 }, true},
		{"a server at 3", func() int { return 3 }, false},
		{"not told", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testStoreConfig(t, t.TempDir(), slog.LevelWarn)
			cfg.ClusterFSMVersion = tc.version
			s := openStore(t, New(cfg))
			first := mustStoreApply(t, s, registerCmd(testInstance("api", "1", "n1")))
			again := mustStoreApply(t, s, registerCmd(testInstance("api", "1", "n1")))
			rev, err := s.Apply(context.Background(), &pb.Command{Kind: &pb.Command_Deregister{Deregister: &pb.InstanceRef{Service: "api", Id: "1", ModRevision: first}}})
			if tc.keep {
				if !errors.Is(err, ErrFailedPrecondition) || s.FSM().Instance("api", "1").GetModRevision() != again {
					t.Fatalf("a removal of version %d after the instance was registered again at %d: %v; want FailedPrecondition and the instance kept", first, again, err)
				}
				return
			}
			if err != nil || s.FSM().Instance("api", "1") != nil {
				t.Fatalf("a removal in a cluster not at version 4: %v; want it applied unconditionally", err)
			}
			if m := loggedCommand(t, s, rev).GetDeregister().GetModRevision(); m != 0 {
				t.Fatalf("entry %d carries mod_revision %d to replicas that would ignore it", rev, m)
			}
		})
	}
}

// loggedCommand is the command of the entry at index rev of s's log.
func loggedCommand(t *testing.T, s *Store, rev uint64) *pb.Command {
	t.Helper()
	var entry raft.Log
	if err := s.logs.GetLog(rev, &entry); err != nil {
		t.Fatal(err)
	}
	var got pb.Command
	if err := proto.Unmarshal(entry.Data, &got); err != nil {
		t.Fatal(err)
	}
	return &got
}

// records returns the remembered results oldest first, as a snapshot
// writes them.
func (r *requestLog) records() []*pb.RequestRecord {
	out := make([]*pb.RequestRecord, 0, r.len())
	for _, e := range r.remembered() {
		rec := &pb.RequestRecord{}
		e.record(rec)
		out = append(out, rec)
	}
	return out
}
