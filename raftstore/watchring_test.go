package raftstore

import (
	"fmt"
	"strings"
	"testing"

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
		total += eventSize.Size(l.at(i))
	}
	if total > maxBytes || l.bytes != total {
		t.Fatalf("the ring holds %d events of %d bytes (counted %d), want at most %d", l.n, total, l.bytes, maxBytes)
	}
	if l.n < 10 || l.n >= 100 {
		t.Fatalf("the ring holds %d of 100 events of about 4 KiB in %d bytes", l.n, maxBytes)
	}
	if got, want := l.at(l.n-1).Revision, revs[len(revs)-1]; got != want {
		t.Errorf("the ring's newest event has revision %d, want %d", got, want)
	}
	for svc, evs := range l.byService {
		for _, e := range evs {
			if e.Revision <= l.compacted {
				t.Errorf("service %s still lists event %d, which left the ring (compacted to %d)", svc, e.Revision, l.compacted)
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
