package raftstore

import (
	"context"
	"sort"
	"sync"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// eventLog is a bounded ring of recent registry events in revision order.
// The FSM appends to it; watchers read from it without ever blocking the
// FSM: a watcher that falls further behind than the ring holds is told so
// and resynchronises from a snapshot.
type eventLog struct {
	mu        sync.RWMutex
	buf       []*pb.Event // ring storage
	start, n  int
	compacted uint64        // events with revision <= compacted may be missing
	head      uint64        // revision of the last append
	changed   chan struct{} // closed on every append, then replaced
}

func newEventLog(size int) *eventLog {
	if size < 1 {
		size = 1
	}
	return &eventLog{buf: make([]*pb.Event, size), changed: make(chan struct{})}
}

func (l *eventLog) at(i int) *pb.Event { return l.buf[(l.start+i)%len(l.buf)] }

// append adds events (all with revisions <= rev) and moves head to rev.
func (l *eventLog) append(evs []*pb.Event, rev uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range evs {
		if l.n == len(l.buf) {
			l.compacted = l.buf[l.start].Revision
			l.buf[l.start] = nil
			l.start = (l.start + 1) % len(l.buf)
			l.n--
		}
		l.buf[(l.start+l.n)%len(l.buf)] = e
		l.n++
	}
	if rev > l.head {
		l.head = rev
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// compactTo forgets every event: used when the state is replaced by a
// snapshot, after which only revisions >= rev can be resumed.
func (l *eventLog) compactTo(rev uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.buf {
		l.buf[i] = nil
	}
	l.start, l.n = 0, 0
	l.compacted, l.head = rev, rev
	close(l.changed)
	l.changed = make(chan struct{})
}

// since returns up to max events of service (all when empty) with revision >
// from, never splitting one revision across two answers, and the revision the
// watcher has then seen. It looks at no more than maxWatchScan events of the
// ring (more only to finish a revision), so that the FSM's append never waits
// long on a watcher's read lock; more is true when it stopped before the
// head. ok is false when from has been compacted away. changed is closed on
// the next append.
func (l *eventLog) since(from uint64, service string, max int) (evs []*pb.Event, seen uint64, more, ok bool, changed <-chan struct{}) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if from < l.compacted {
		return nil, 0, false, false, l.changed
	}
	seen = l.head
	if from > seen {
		seen = from
	}
	first := sort.Search(l.n, func(i int) bool { return l.at(i).Revision > from })
	for i := first; i < l.n; i++ {
		e := l.at(i)
		if i > first && (len(evs) >= max || i-first >= maxWatchScan) {
			if prev := l.at(i - 1).Revision; e.Revision != prev {
				return evs, prev, true, true, l.changed
			}
		}
		if service == "" || e.Instance.GetService() == service {
			evs = append(evs, e)
		}
	}
	return evs, seen, false, true, l.changed
}

// maxWatchBatch bounds the events in one WatchResponse.
const maxWatchBatch = 1000

// maxWatchScan bounds the ring entries one read of a watcher looks at.
const maxWatchScan = 4 * maxWatchBatch

// Watcher follows the registry from a revision. It is not safe for
// concurrent use.
type Watcher struct {
	fsm      *FSM
	service  string
	rev      uint64
	snapshot bool
}

// Watch returns a watcher of service (every service when empty) that yields
// events after revision from; from == 0 starts with a snapshot.
func (f *FSM) Watch(service string, from uint64) *Watcher {
	return &Watcher{fsm: f, service: service, rev: from, snapshot: from == 0}
}

// Next blocks until there is something to send and returns it: a snapshot
// (the complete state of the watched services) when the watcher starts at 0
// or has fallen behind the event ring, otherwise the next events in revision
// order. It returns ctx's error when ctx ends.
func (w *Watcher) Next(ctx context.Context) (*pb.WatchResponse, error) {
	for {
		if w.snapshot {
			w.snapshot = false
			return w.takeSnapshot(), nil
		}
		evs, seen, more, ok, changed := w.fsm.events.since(w.rev, w.service, maxWatchBatch)
		if !ok {
			w.snapshot = true
			continue
		}
		w.rev = seen
		if len(evs) > 0 {
			return &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: seen}, Events: evs}, nil
		}
		if more {
			continue // the scan stopped among other services' events
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// Revision is the last revision the watcher has seen.
func (w *Watcher) Revision() uint64 { return w.rev }

func (w *Watcher) takeSnapshot() *pb.WatchResponse {
	f := w.fsm
	f.mu.RLock()
	defer f.mu.RUnlock()
	var insts []*pb.Instance
	if w.service == "" {
		insts = f.instancesWhere(func(*pb.Instance) bool { return true })
	} else {
		for _, inst := range f.services[w.service] {
			insts = append(insts, inst)
		}
		sortInstances(insts)
	}
	w.rev = f.revision
	resp := &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: f.revision}, Snapshot: true}
	for _, inst := range insts {
		resp.Events = append(resp.Events, &pb.Event{Type: pb.Event_PUT, Instance: inst, Revision: inst.ModRevision})
	}
	return resp
}

// WaitRevision blocks until this replica has applied revision rev or ctx
// ends. A follower uses it to read its own writes.
func (f *FSM) WaitRevision(ctx context.Context, rev uint64) error {
	for {
		f.events.mu.RLock()
		head, changed := f.events.head, f.events.changed
		f.events.mu.RUnlock()
		if head >= rev {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}
