package raftstore

import (
	"context"
	"slices"
	"sort"
	"strings"
	"sync"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// eventLog is a bounded ring of recent registry events in revision order,
// with the ring's events of each service alongside, and the watchers to
// tell of new events, by the service they watch. The FSM appends to it;
// watchers read from it without ever blocking the FSM: a watcher that falls
// further behind than the ring holds is told so and resynchronises from a
// snapshot.
//
// An append wakes only the watchers its events concern (those of the
// events' services and those of every service), and a watcher of one
// service reads only that service's events: a registry with many watchers
// costs each event the watchers that want it, not all of them.
type eventLog struct {
	mu       sync.RWMutex
	buf      []*ringEvent // ring storage
	start, n int
	// bytes is the encoded size of the ring's events; past maxBytes (0:
	// no bound) the oldest leave, so that a registry of large instances
	// keeps fewer events rather than len(buf) large ones.
	bytes, maxBytes int
	byService       map[string][]*ringEvent // the ring's events of each service, in ring order
	compacted       uint64                  // events with revision <= compacted may be missing
	head            uint64                  // revision of the last append
	changed         chan struct{}           // closed on every append, then replaced
	// restores counts the times the state was replaced (compactTo): a
	// watcher that last synchronised before the latest needs a snapshot,
	// whatever its revision, as its events are of the state replaced.
	restores uint64

	// subMu guards the subscriptions; it is taken after mu is released.
	subMu sync.Mutex
	subs  map[string][]*subscription // watchers of one service
	all   []*subscription            // watchers of every service
}

// subscription is how the event log wakes one watcher.
type subscription struct {
	service string
	// notify holds one token when there may be events to read: appends
	// never wait on a watcher, and wake-ups a watcher has not taken yet
	// merge into one.
	notify chan struct{}
	// wake, when set, is called instead (under eventLog.subMu: it must
	// not block nor call back into the event log), and notify is nil.
	wake  func()
	index int // in eventLog.subs[service] or eventLog.all
	// signals counts the wake-ups sent (guarded by eventLog.subMu).
	signals uint64
}

func newEventLog(size, maxBytes int) *eventLog {
	if size < 1 {
		size = 1
	}
	return &eventLog{
		maxBytes:  maxBytes,
		buf:       make([]*ringEvent, size),
		byService: make(map[string][]*ringEvent),
		changed:   make(chan struct{}),
		subs:      make(map[string][]*subscription),
	}
}

func (l *eventLog) at(i int) *ringEvent { return l.buf[(l.start+i)%len(l.buf)] }

// append adds events (all with revisions <= rev), moves head to rev and
// wakes the watchers the events concern.
func (l *eventLog) append(evs []*ringEvent, rev uint64) {
	l.mu.Lock()
	for _, e := range evs {
		for l.n == len(l.buf) || (l.n > 0 && l.maxBytes > 0 && l.bytes+e.size > l.maxBytes) {
			old := l.buf[l.start]
			l.compacted = old.revision
			l.buf[l.start] = nil
			l.start = (l.start + 1) % len(l.buf)
			l.n--
			l.bytes -= old.size
			l.dropOldest(old.service)
		}
		l.buf[(l.start+l.n)%len(l.buf)] = e
		l.n++
		l.bytes += e.size
		l.byService[e.service] = append(l.byService[e.service], e)
		if l.n > hotEvents {
			l.at(l.n - 1 - hotEvents).cool()
		}
	}
	if rev > l.head {
		l.head = rev
	}
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	l.wake(evs)
}

// dropOldest forgets the oldest event of service, which has just left the
// ring.
func (l *eventLog) dropOldest(service string) {
	evs := l.byService[service]
	if len(evs) <= 1 {
		delete(l.byService, service)
		return
	}
	evs[0] = nil
	l.byService[service] = evs[1:]
}

// wake signals the watchers of every service and those of each service
// evs touch, once each.
func (l *eventLog) wake(evs []*ringEvent) {
	if len(evs) == 0 {
		return
	}
	l.subMu.Lock()
	defer l.subMu.Unlock()
	for _, s := range l.all {
		s.signal()
	}
	var done map[string]bool // services woken, once evs touch a second one
	first := evs[0].service
	for _, s := range l.subs[first] {
		s.signal()
	}
	for _, e := range evs[1:] {
		svc := e.service
		if svc == first || done[svc] {
			continue
		}
		if done == nil {
			done = make(map[string]bool)
		}
		done[svc] = true
		for _, s := range l.subs[svc] {
			s.signal()
		}
	}
}

func (s *subscription) signal() {
	s.signals++
	if s.wake != nil {
		s.wake()
		return
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// wakeAll signals every watcher: the state was replaced.
func (l *eventLog) wakeAll() {
	l.subMu.Lock()
	defer l.subMu.Unlock()
	for _, s := range l.all {
		s.signal()
	}
	for _, subs := range l.subs {
		for _, s := range subs {
			s.signal()
		}
	}
}

// subscribe registers a watcher of service (every service when empty),
// woken through its notify channel or, when wake is set, by calling it.
func (l *eventLog) subscribe(service string, wake func()) *subscription {
	s := &subscription{service: service, wake: wake}
	if wake == nil {
		s.notify = make(chan struct{}, 1)
	}
	l.subMu.Lock()
	defer l.subMu.Unlock()
	if service == "" {
		s.index = len(l.all)
		l.all = append(l.all, s)
	} else {
		s.index = len(l.subs[service])
		l.subs[service] = append(l.subs[service], s)
	}
	return s
}

// unsubscribe removes s; it is not woken again.
func (l *eventLog) unsubscribe(s *subscription) {
	l.subMu.Lock()
	defer l.subMu.Unlock()
	list := l.all
	if s.service != "" {
		list = l.subs[s.service]
	}
	if s.index < 0 || s.index >= len(list) || list[s.index] != s {
		return // already removed
	}
	last := len(list) - 1
	list[s.index] = list[last]
	list[s.index].index = s.index
	list[last] = nil
	list = list[:last]
	switch {
	case s.service == "":
		l.all = list
	case len(list) == 0:
		delete(l.subs, s.service)
	default:
		l.subs[s.service] = list
	}
	s.index = -1
}

// compactTo forgets every event: used when the state is replaced by a
// snapshot, after which only revisions >= rev can be resumed. Every
// watcher wakes to resynchronise, also one at or past rev (a state
// replaced by one at a revision it has seen is no continuation of it).
func (l *eventLog) compactTo(rev uint64) {
	l.mu.Lock()
	for i := range l.buf {
		l.buf[i] = nil
	}
	l.start, l.n, l.bytes = 0, 0, 0
	clear(l.byService)
	l.compacted, l.head = rev, rev
	l.restores++
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	l.wakeAll()
}

// since returns up to max events of service (all when empty) with revision >
// from, never splitting one revision across two answers, and the revision the
// watcher has then seen; more is true when it stopped before the head. It
// reads only the events of service, so a watcher's read costs what it
// receives. ok is false when from has been compacted away, or when the
// state was replaced since the watcher synchronised with it (restores is
// the count it synchronised at).
func (l *eventLog) since(from uint64, service string, max int, restores uint64) (evs []*pb.Event, seen uint64, more, ok bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if from < l.compacted || restores != l.restores {
		return nil, 0, false, false
	}
	seen = l.head
	if from > seen {
		seen = from
	}
	n, at := l.of(service)
	first := sort.Search(n, func(i int) bool { return at(i).revision > from })
	for i := first; i < n; i++ {
		e := at(i)
		if i-first >= max {
			if prev := at(i - 1).revision; e.revision != prev {
				return evs, prev, true, true
			}
		}
		evs = append(evs, e.event())
	}
	return evs, seen, false, true
}

// of returns the number of the ring's events of service (all when empty)
// and how to get the i-th. The caller holds mu.
func (l *eventLog) of(service string) (int, func(int) *ringEvent) {
	if service == "" {
		return l.n, l.at
	}
	list := l.byService[service]
	return len(list), func(i int) *ringEvent { return list[i] }
}

// backlog counts the events of service (all when empty) with revision >
// after and their encoded size, stopping once the count passes maxEvents
// or the size maxBytes; last is the revision of the last one counted
// (after when none). ok is false when events after revision read have
// been compacted away.
func (l *eventLog) backlog(read, after uint64, service string, maxEvents, maxBytes int) (events, bytes int, last uint64, ok bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if read < l.compacted {
		return 0, 0, after, false
	}
	n, at := l.of(service)
	last = after
	for i := sort.Search(n, func(i int) bool { return at(i).revision > after }); i < n && events <= maxEvents && bytes <= maxBytes; i++ {
		e := at(i)
		events++
		bytes += e.size
		last = e.revision
	}
	return events, bytes, last, true
}

// maxWatchBatch bounds the events in one WatchResponse (more only to
// finish a revision) and in one page of a snapshot.
const maxWatchBatch = 1000

// Watcher follows the registry from a revision. It is not safe for
// concurrent use; Close releases it.
type Watcher struct {
	fsm      *FSM
	service  string
	rev      uint64
	snapshot bool
	pages    *snapshotPages // the rest of a snapshot being handed out
	sub      *subscription
	// encoded makes snapshot pages carry instances encoded
	// (EncodeSnapshots).
	encoded bool
	// restores is the event log's count of state replacements when the
	// watcher was made or took its last snapshot.
	restores uint64
}

// EncodeSnapshots makes the watcher's snapshot pages carry each instance
// as the registry stores it, encoded, instead of decoding it: an event of
// such a page has no Instance; its instance is in the event's unknown
// fields, as the bytes of its instance field, so that the event encodes
// to the same bytes a decoded one does. It is for a reader that only
// sends the pages on (the gRPC API): listing a large registry then costs
// a copy per instance rather than a decode and an encode.
func (w *Watcher) EncodeSnapshots() { w.encoded = true }

// Watch returns a watcher of service (every service when empty) that yields
// events after revision from; from == 0 starts with a snapshot. The caller
// must Close it.
func (f *FSM) Watch(service string, from uint64) *Watcher {
	return f.newWatcher(service, from, nil)
}

// WatchFunc is Watch for a reader that serves many watchers from one
// goroutine: instead of a channel to wait on, the watcher calls wake
// whenever a write of its services may have given it something to read,
// and the reader takes it with Poll, never Next (the first Poll, which
// finds the snapshot or the events already in the ring, is the reader's
// to make). wake runs on the registry's write path, under its lock of the
// watchers: it must be quick, must not block and must not call the
// watcher or the FSM.
func (f *FSM) WatchFunc(service string, from uint64, wake func()) *Watcher {
	return f.newWatcher(service, from, wake)
}

func (f *FSM) newWatcher(service string, from uint64, wake func()) *Watcher {
	w := &Watcher{fsm: f, service: service, rev: from, snapshot: from == 0, sub: f.events.subscribe(service, wake)}
	f.events.mu.RLock()
	w.restores = f.events.restores
	f.events.mu.RUnlock()
	return w
}

// Close stops the watcher's wake-ups. It is safe to call twice.
func (w *Watcher) Close() {
	w.fsm.events.unsubscribe(w.sub)
	w.pages = nil
}

// Next blocks until there is something to send and returns it: a snapshot
// (the complete state of the watched services) when the watcher starts at 0
// or has fallen behind the event ring, otherwise the next events in revision
// order. A snapshot comes in pages of at most maxWatchBatch instances, each
// built when it is asked for: only the first is marked Snapshot, all but the
// last More, and together they are the state at the first one's revision.
// Next returns ctx's error when ctx ends, once nothing is ready.
func (w *Watcher) Next(ctx context.Context) (*pb.WatchResponse, error) {
	for {
		if resp, ok := w.Poll(); ok {
			return resp, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-w.sub.notify:
		}
	}
}

// Poll returns what Next would, without waiting: ok is false when there
// is nothing to send yet.
func (w *Watcher) Poll() (resp *pb.WatchResponse, ok bool) {
	for {
		if w.pages != nil {
			resp := w.pages.next()
			if !resp.More {
				w.pages = nil
			}
			return resp, true
		}
		if w.snapshot {
			w.snapshot = false
			w.pages = w.takeSnapshot()
			continue
		}
		evs, seen, _, ok := w.fsm.events.since(w.rev, w.service, maxWatchBatch, w.restores)
		if !ok {
			w.snapshot = true
			continue
		}
		w.rev = seen
		if len(evs) == 0 {
			return nil, false
		}
		return &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: seen}, Events: evs}, true
	}
}

// Revision is the last revision the watcher has seen.
func (w *Watcher) Revision() uint64 { return w.rev }

// Resync makes the watcher start over with a snapshot, whatever it was
// following: for a reader that learned that the revision it resumes from
// is of no history this registry has (past everything the cluster has
// committed: the client watched a cluster since rebuilt from an older
// state). Like Next, it must not be called concurrently with Next or
// Poll.
func (w *Watcher) Resync() {
	w.pages = nil
	w.snapshot = true
}

// Restored reports whether the registry's state was replaced (a snapshot
// installed, FSM.RestoreWithin) since the watcher last synchronised with
// it: its next response is a snapshot of the new state. Backlog, which
// fails then as its events left the ring, is no sign of a slow reader.
// Like Next, it must not be called concurrently with Next or Poll.
func (w *Watcher) Restored() bool {
	w.fsm.events.mu.RLock()
	defer w.fsm.events.mu.RUnlock()
	return w.fsm.events.restores != w.restores
}

// Ready receives when the registry may have events for the watcher that
// it has not read. Next takes the same signal, so a caller waiting on
// Ready while it does not call Next (sending what Next returned) can
// measure what piles up behind it (Backlog) and call Next afterwards
// without missing anything: Next reads the ring before it waits.
func (w *Watcher) Ready() <-chan struct{} { return w.sub.notify }

// Backlog counts the events of the watched services the ring holds after
// revision after, and their encoded size: what a watcher that has sent
// everything up to revision read, and counted its backlog up to after
// (>= read), has yet to send besides. It counts no further than just past
// maxEvents events or maxBytes bytes; last is the revision of the last
// event counted (after when none), from which the next count goes on. ok
// is false when events after read have left the ring (the watcher would
// need a snapshot). Unlike Next it may be called from any goroutine, also
// while Next runs.
func (w *Watcher) Backlog(read, after uint64, maxEvents, maxBytes int) (events, bytes int, last uint64, ok bool) {
	return w.fsm.events.backlog(read, after, w.service, maxEvents, maxBytes)
}

// wakeups returns how many times the event log has signalled w.
func (w *Watcher) wakeups() uint64 {
	w.fsm.events.subMu.Lock()
	defer w.fsm.events.subMu.Unlock()
	return w.sub.signals
}

// snapshotPages is a snapshot being handed out page by page: the watched
// services' instances at one revision, their encodings copied under the
// FSM's read lock (stored encodings are never changed), sorted, decoded
// and wrapped in events only as each page is built.
type snapshotPages struct {
	rev      uint64
	services []serviceInstances // sorted by name
	sorted   bool               // services[0]'s instances are sorted by id
	started  bool
	encoded  bool // events carry their instances encoded (EncodeSnapshots)
}

type serviceInstances struct {
	name      string
	instances []instanceRecord
}

func (w *Watcher) takeSnapshot() *snapshotPages {
	f := w.fsm
	f.mu.RLock()
	defer f.mu.RUnlock()
	p := &snapshotPages{rev: f.revision, encoded: w.encoded}
	// The state and the count of its replacements change together, under
	// f.mu (FSM.RestoreWithin).
	f.events.mu.RLock()
	w.restores = f.events.restores
	f.events.mu.RUnlock()
	if w.service != "" {
		if byID := f.services[w.service]; len(byID) > 0 {
			p.services = []serviceInstances{{w.service, records(w.service, byID)}}
		}
	} else {
		p.services = make([]serviceInstances, 0, len(f.services))
		for name, byID := range f.services {
			p.services = append(p.services, serviceInstances{name, records(name, byID)})
		}
		slices.SortFunc(p.services, func(a, b serviceInstances) int { return strings.Compare(a.name, b.name) })
	}
	w.rev = f.revision
	return p
}

// records lists the instances of service, byID.
func records(service string, byID map[string]storedInstance) []instanceRecord {
	out := make([]instanceRecord, 0, len(byID))
	for id, st := range byID {
		out = append(out, instanceRecord{service, id, st})
	}
	return out
}

// next builds the next page: up to maxWatchBatch instances, in the order
// of service and id.
func (p *snapshotPages) next() *pb.WatchResponse {
	resp := &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: p.rev}, Snapshot: !p.started}
	p.started = true
	for len(p.services) > 0 && len(resp.Events) < maxWatchBatch {
		s := &p.services[0]
		if !p.sorted {
			slices.SortFunc(s.instances, func(a, b instanceRecord) int { return strings.Compare(a.id, b.id) })
			p.sorted = true
		}
		take := min(len(s.instances), maxWatchBatch-len(resp.Events))
		for _, r := range s.instances[:take] {
			resp.Events = append(resp.Events, r.stored.snapshotEvent(p.encoded))
		}
		clear(s.instances[:take]) // decoded: let the page's garbage go
		s.instances = s.instances[take:]
		if len(s.instances) == 0 {
			p.services[0] = serviceInstances{}
			p.services = p.services[1:]
			p.sorted = false
		}
	}
	resp.More = len(p.services) > 0
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
		if f.waiting != nil {
			f.waiting()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}
