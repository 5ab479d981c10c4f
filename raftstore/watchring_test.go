package raftstore

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// The watch ring holds at most its bytes: registrations of large
// instances push the oldest events out long before the ring's count is
// reached, the ring's events are the newest ones, and a watcher resuming
// from an event that left gets a snapshot.
func TestWatchRingHoldsAtMostItsBytes(t *testing.T) {
	const maxBytes = 64 << 10
	d := newFSMDriver(t, 16)
	d.fsm = newFSM(1<<16, maxBytes)
	var revs []uint64
	for i := range 100 {
		inst := testInstance(fmt.Sprintf("svc-%d", i%3), fmt.Sprintf("%03d", i), "n1")
		inst.Metadata["blob"] = strings.Repeat("x", 4<<10)
		revs = append(revs, d.mustApply(registerCmd(inst)))
	}
	l := d.fsm.events
	total := 0
	for i := range l.n {
		total += proto.Size(l.at(i).event())
	}
	if total > maxBytes || l.bytes != total {
		t.Fatalf("the ring holds %d events of %d bytes (counted %d), want at most %d", l.n, total, l.bytes, maxBytes)
	}
	if l.n < 10 || l.n >= 100 {
		t.Fatalf("the ring holds %d of 100 events of about 4 KiB in %d bytes", l.n, maxBytes)
	}
	if got, want := l.at(l.n-1).revision, revs[len(revs)-1]; got != want {
		t.Errorf("the ring's newest event has revision %d, want %d", got, want)
	}
	for svc, evs := range l.byService {
		for _, e := range evs {
			if e.revision <= l.compacted {
				t.Errorf("service %s still lists event %d, which left the ring (compacted to %d)", svc, e.revision, l.compacted)
			}
		}
	}

	w := d.fsm.Watch("", revs[0])
	defer w.Close()
	resp, err := w.Next(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Snapshot {
		t.Errorf("a watcher resuming from revision %d, which left the ring, got events, want a snapshot", revs[0])
	}
	w2 := d.fsm.Watch("", revs[len(revs)-2])
	defer w2.Close()
	resp, err = w2.Next(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Snapshot || len(resp.Events) != 1 || resp.Events[0].Type != pb.Event_PUT || resp.Events[0].Revision != revs[len(revs)-1] {
		t.Errorf("a watcher resuming from the ring got %v, want the last event", compactText(resp))
	}
}

// Events past the newest hotEvents keep only their encoding and read as
// they were made; the newest are one object for every watcher.
func TestWatchRingEventsReadTheSameHotOrCool(t *testing.T) {
	const n = hotEvents + 50
	d := newFSMDriver(t, n+10)
	var want []*pb.Event
	d.mustApply(registerCmd(testInstance("api", "gone", "n1")))
	for i := range n {
		inst := testInstance("api", fmt.Sprintf("%05d", i%100), "n1")
		inst.Metadata["i"] = fmt.Sprint(i)
		rev := d.mustApply(registerCmd(inst))
		got := d.fsm.Instance("api", inst.Id)
		if got.ModRevision != rev {
			t.Fatalf("instance %s at revision %d, want %d", inst.Id, got.ModRevision, rev)
		}
		want = append(want, &pb.Event{Type: pb.Event_PUT, Instance: got, Revision: rev})
	}
	rev := d.mustApply(deregisterCmd("api", "gone"))
	want = append(want, &pb.Event{Type: pb.Event_DELETE, Instance: testInstance("api", "gone", "n1"), Revision: rev})
	want[len(want)-1].Instance.CreateRevision, want[len(want)-1].Instance.ModRevision, want[len(want)-1].Instance.HealthSince = 1, 1, 1000

	read := func() []*pb.Event {
		w := d.fsm.Watch("api", 1)
		defer w.Close()
		var out []*pb.Event
		for len(out) < len(want) {
			resp, err := w.Next(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if resp.Snapshot {
				t.Fatalf("a watcher from revision 1 got a snapshot, want the ring's events")
			}
			out = append(out, resp.Events...)
		}
		return out
	}
	a, b := read(), read()
	for i := range want {
		if !proto.Equal(a[i], want[i]) {
			t.Fatalf("event %d of %d reads {%v}, want {%v}", i, len(want), compactText(a[i]), compactText(want[i]))
		}
		hot := i >= len(want)-hotEvents
		if hot != (a[i] == b[i]) {
			t.Fatalf("event %d of %d: hot %v, but two watchers got one object: %v", i, len(want), hot, a[i] == b[i])
		}
	}
	if l := d.fsm.events; l.at(0).ev != nil || l.at(l.n-1).ev == nil {
		t.Errorf("the oldest event is kept whole or the newest is not")
	}
}
