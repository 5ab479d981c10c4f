package grpcapi

import (
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// createAsking opens watch id of service from revision from, asking for
// progress notifications every progressMs.
func (m *manyStream) createAsking(id uint64, service string, from uint64, progressMs uint32) {
	m.t.Helper()
	err := m.stream.Send(&pb.WatchManyRequest{ProgressNotifyMs: progressMs, Kind: &pb.WatchManyRequest_Create{Create: &pb.WatchCreate{
		WatchId: id, Watch: &pb.WatchRequest{Service: service, FromRevision: from}}}})
	if err != nil {
		m.t.Fatal(err)
	}
}

// isProgress reports whether r is a progress notification of the stream.
func isProgress(r *pb.WatchManyResponse) bool { return r.GetProgressNotifyMs() != 0 }

// checkProgress fails the test unless r is a progress notification of an
// interval of every, at revision rev, from agent a1.
func checkProgress(t *testing.T, r *pb.WatchManyResponse, every time.Duration, rev uint64) {
	t.Helper()
	if r.WatchId != 0 || r.Ended != nil || len(r.GetResponse().GetEvents()) != 0 || r.GetResponse().GetSnapshot() {
		t.Fatalf("progress notification %v: want watch 0, no events, no end", r)
	}
	if got := time.Duration(r.ProgressNotifyMs) * time.Millisecond; got != every {
		t.Fatalf("progress notification of an interval of %s, want %s", got, every)
	}
	if h := r.GetResponse().GetHeader(); h.GetRevision() != rev || h.GetServedBy() != "a1" {
		t.Fatalf("progress notification at revision %d from %q, want revision %d from a1", h.GetRevision(), h.GetServedBy(), rev)
	}
}

// An idle WatchMany stream that asked for progress notifications gets
// one at once (the agent's agreement, with the interval it agreed to: at
// least minProgressInterval) and then one each interval it sends nothing
// else, at the replica's revision; they are of the stream, never of a
// watch. A stream on the same agent that did not ask, as a client from
// before them, gets none: its next response is its watch's next event.
func TestWatchManySendsProgressOnlyToAStreamThatAskedForIt(t *testing.T) {
	w, _, addr := startMany(t, RegistryConfig{})
	w.Register(inst("a.rpc", "a1"))
	rev := w.Index()

	unasked := openMany(t, addr)
	unasked.create(1, "a.rpc", 0)
	if got := describe(unasked.next()); got != "1:snapshot[a.rpc/a1]" {
		t.Fatalf("first response of the stream that did not ask: %s, want its snapshot", got)
	}

	asking := openMany(t, addr)
	asking.createAsking(1, "a.rpc", 0, 1) // 1 ms: the agent agrees to its minimum
	var snapshot bool
	progress := 0
	for progress < 3 || !snapshot {
		r := asking.next()
		if !isProgress(r) {
			if got := describe(r); got != "1:snapshot[a.rpc/a1]" || snapshot {
				t.Fatalf("response %s of the stream that asked for progress, want one snapshot and progress", got)
			}
			snapshot = true
			continue
		}
		checkProgress(t, r, minProgressInterval, rev)
		progress++
	}

	// Later requests without the field leave the interval as it was.
	asking.cancel(1)
	for range 2 {
		checkProgress(t, asking.next(), minProgressInterval, rev)
	}

	// The stream that did not ask has received nothing all this while:
	// its next response is the event.
	w.Register(inst("a.rpc", "a2"))
	if got := describe(unasked.next()); got != "1:events[a.rpc/a2]" {
		t.Fatalf("the stream that did not ask for progress received %s, want its watch's next event", got)
	}
	checkProgress(t, asking.next(), minProgressInterval, w.Index())
}

// The agent agrees to the interval a client asks for above the minimum,
// and the watches of a stream that asked get their snapshot and events
// as any other.
func TestWatchManyProgressKeepsTheAskedIntervalAndTheEvents(t *testing.T) {
	w, _, addr := startMany(t, RegistryConfig{})
	m := openMany(t, addr)
	m.createAsking(7, "a.rpc", 0, 250)
	checkProgress(t, m.next(), 250*time.Millisecond, w.Index())
	for i, r := 0, m.next(); ; i, r = i+1, m.next() {
		if !isProgress(r) {
			if got := describe(r); got != "7:snapshot[]" {
				t.Fatalf("response %s, want the empty snapshot of a.rpc", got)
			}
			break
		}
		if i > 100 {
			t.Fatal("no snapshot among 100 progress notifications")
		}
	}
	w.Register(inst("a.rpc", "a1"))
	for {
		r := m.next()
		if isProgress(r) {
			continue // sent before the registration
		}
		if got := describe(r); got != "7:events[a.rpc/a1]" {
			t.Fatalf("response %s, want the event of a1", got)
		}
		break
	}
}
