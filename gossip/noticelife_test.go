package gossip

import (
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// runNode is member name at port 1 with meta m sent by the run run.
func runNode(t *testing.T, name string, m Meta, run string) *memberlist.Node {
	t.Helper()
	b, err := m.encodeRun(run)
	if err != nil {
		t.Fatal(err)
	}
	n := fakeNode(t, name, 1, m)
	n.Meta = b
	return n
}

// A leave notice counts for the run of the member that sent it only, and
// for leaveNoticeLife: an agent whose goodbye was lost (killed between its
// notice and memberlist's leave) and that restarted at its address before
// its peers declared it failed, or a member a stranger sent a notice
// for, was reported left when it later crashed, which removes it from
// Raft at once instead of after dead_node_reap.
func TestALeaveNoticeOutlivesNeitherTheRunNorItsLife(t *testing.T) {
	d, _, events := delegateForTest(t)
	meta := testMeta("x")
	run1, run2 := newRunID(), newRunID()
	expect := func(step string, typ EventType, status string) {
		t.Helper()
		if ev := next(t, events); ev.Type != typ || ev.Member.Status != status || ev.Member.Name != "x" {
			t.Fatalf("%s: got %v (%s) for %s, want %v (%s)", step, ev.Type, ev.Member.Status, ev.Member.Name, typ, status)
		}
	}
	age := func(f func(e *memberEntry)) {
		d.mu.Lock()
		defer d.mu.Unlock()
		f(d.members["x"])
	}
	long := leaveNoticeLife + time.Second

	// Its own notice, then a new run with the same meta: no event, and
	// the crash of the new run is a failure.
	d.NotifyJoin(runNode(t, "x", meta, run1))
	expect("join", EventJoin, StatusAlive)
	d.NotifyMsg(leaveNotice(msgLeaveNotice, "x"))
	d.NotifyUpdate(runNode(t, "x", meta, run2))
	d.NotifyLeave(runNode(t, "x", meta, run2))
	expect("the new run crashes after the old run's notice", EventFailed, StatusFailed)

	// A relayed notice, then a new run with new meta.
	d.NotifyJoin(runNode(t, "x", meta, run1))
	expect("back", EventJoin, StatusAlive)
	d.NotifyMsg(leaveNotice(msgLeaveRelay, "x"))
	newer := meta
	newer.Build = "v2"
	d.NotifyUpdate(runNode(t, "x", newer, run2))
	expect("the new run's meta", EventUpdate, StatusAlive)
	d.NotifyLeave(runNode(t, "x", newer, run2))
	expect("the new run crashes after a relayed notice of the old", EventFailed, StatusFailed)

	// The same run's meta update keeps the notice.
	d.NotifyJoin(runNode(t, "x", meta, run1))
	expect("back again", EventJoin, StatusAlive)
	d.NotifyMsg(leaveNotice(msgLeaveNotice, "x"))
	d.NotifyUpdate(runNode(t, "x", newer, run1))
	expect("meta update of the same run", EventUpdate, StatusAlive)
	d.NotifyLeave(runNode(t, "x", newer, run1))
	expect("gone after its notice", EventLeave, StatusLeft)

	// A notice no leave followed within leaveNoticeLife.
	d.NotifyJoin(runNode(t, "x", meta, run1))
	expect("back once more", EventJoin, StatusAlive)
	d.NotifyMsg(leaveNotice(msgLeaveNotice, "x"))
	age(func(e *memberEntry) { e.noticed = e.noticed.Add(-long) })
	d.NotifyLeave(runNode(t, "x", meta, run1))
	expect("crash long after a notice", EventFailed, StatusFailed)

	// A notice long after the failure does not turn it into a leave.
	age(func(e *memberEntry) { e.since = e.since.Add(-long) })
	d.NotifyMsg(leaveNotice(msgLeaveNotice, "x"))
	if e, _ := d.get("x"); e.Status != StatusFailed {
		t.Fatalf("a notice about a failure %s old made it %s", long, e.Status)
	}
	select {
	case ev := <-events:
		t.Fatalf("unexpected event %v %+v", ev.Type, ev.Member)
	default:
	}
}

// Every Gossip sends a run id of its own in its meta, and keeps it across
// meta updates.
func TestMetaCarriesTheRunID(t *testing.T) {
	a, err := New(testConfig(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(testConfig(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	_, runA, errA := decodeMetaRun(a.metaBytes())
	_, runB, errB := decodeMetaRun(b.metaBytes())
	if errA != nil || errB != nil || len(runA) != runIDLen || runA == runB {
		t.Fatalf("run ids %q (%v) and %q (%v), want two different ones of %d characters", runA, errA, runB, errB, runIDLen)
	}
}
