package grpcapi

import (
	"testing"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func TestWatchQueueBoundsTheBacklogBehindTheHead(t *testing.T) {
	resp := func(rev uint64, n int, snapshot bool) *queuedWatch {
		r := &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: rev}, Snapshot: snapshot}
		for range n {
			r.Events = append(r.Events, &pb.Event{Revision: rev, Instance: &pb.Instance{Id: "x"}})
		}
		return newQueuedWatch(r)
	}
	// Ten events of a few bytes each merge into one message.
	q := newWatchQueue(WatchLimits{Events: 10, Bytes: 1 << 20}, 0)
	// The head is taken whatever its size.
	if !q.push(resp(5, 100, true)) {
		t.Fatal("an empty queue refused a response")
	}
	for rev := uint64(6); rev <= 10; rev++ { // small responses merge behind the head
		if !q.push(resp(rev, 2, false)) {
			t.Fatalf("push of revision %d refused with a backlog of %d events", rev, q.events)
		}
	}
	if len(q.items) != 2 || q.items[1].rev != 10 || len(q.items[1].parts[0].Events) != 10 {
		t.Fatalf("queue holds %d items, want the head and one merged response of 10 events up to revision 10", len(q.items))
	}
	if q.push(resp(11, 1, false)) {
		t.Fatal("a push past the backlog's 10 events was taken")
	}
	q.pop()
	if sent, events, _, _ := q.backlog(); sent != 5 || events != 0 {
		t.Fatalf("after sending the head: sent %d, backlog %d events; want 5 and 0", sent, events)
	}
	if !q.push(resp(11, 1, false)) {
		t.Fatal("a push refused behind a new head with an empty backlog")
	}
}
