package gossip

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// EventType says what happened to a member.
type EventType int

const (
	// EventJoin: a member appeared, or came back after failing or leaving.
	EventJoin EventType = iota + 1
	// EventLeave: a member said goodbye (Leave) before going away.
	EventLeave
	// EventFailed: a member stopped answering and its peers declared it dead.
	EventFailed
	// EventUpdate: a member's Meta changed.
	EventUpdate
)

// String returns "join", "leave", "failed" or "update".
func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventFailed:
		return "failed"
	case EventUpdate:
		return "update"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is one change in membership, as this agent saw it.
type Event struct {
	Type EventType
	// Member is the member as it was right after the change.
	Member Member
}

// Member statuses.
const (
	// StatusAlive: the member answers probes (or has not yet been
	// declared dead).
	StatusAlive = "alive"
	// StatusSuspect is reserved for a member that missed probes but is not
	// yet declared dead. memberlist v0.7.0 does not expose suspicion
	// (hashicorp/memberlist#293), so this package never reports it today:
	// a suspect member is listed as alive until it is declared dead.
	StatusSuspect = "suspect"
	// StatusLeft: the member left gracefully (Leave).
	StatusLeft = "left"
	// StatusFailed: the member was declared dead.
	StatusFailed = "failed"
)

// Member is an agent known to gossip.
type Member struct {
	// Name is the memberlist node name (the agent's name).
	Name string
	// Addr is the member's gossip address, host:port.
	Addr string
	// Meta is what the member advertises; empty if its meta could not be
	// decoded (a warning is logged).
	Meta Meta
	// Status is StatusAlive, StatusLeft or StatusFailed (see StatusSuspect).
	Status string
}

// memberEntry is a Member with what the table needs to keep it.
type memberEntry struct {
	Member
	leaving bool      // its meta carries the Leaving flag
	since   time.Time // last status change
}

// memberTable is this agent's view of the cluster, kept from memberlist's
// callbacks. memberlist's own Members lists only live nodes and hands out
// pointers it keeps writing to, so the table is the race-free source for
// Members, including the failed and left members memberlist still
// remembers.
type memberTable struct {
	mu      sync.Mutex
	members map[string]*memberEntry
}

func (t *memberTable) get(name string) (memberEntry, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.members[name]
	if !ok {
		return memberEntry{}, false
	}
	return *e, true
}

// set stores e and reports the entry it replaced, if any.
func (t *memberTable) set(e memberEntry) (old memberEntry, existed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.members == nil {
		t.members = make(map[string]*memberEntry)
	}
	if p, ok := t.members[e.Name]; ok {
		old, existed = *p, true
	}
	t.members[e.Name] = &e
	return old, existed
}

// list returns the members sorted by name, first forgetting those that
// have been failed or left for longer than forgetAfter (memberlist forgets
// them after GossipToTheDeadTime too).
func (t *memberTable) list(now time.Time, forgetAfter time.Duration) []Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Member, 0, len(t.members))
	for name, e := range t.members {
		if e.Status != StatusAlive && now.Sub(e.since) > forgetAfter {
			delete(t.members, name)
			continue
		}
		out = append(out, e.Member)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// eventQueue is an unbounded FIFO between memberlist's callbacks, which
// must never block, and the consumer of Events, which may be slow. push
// appends under a mutex and leaves a token in wake; run is the one pump
// goroutine that moves events to the consumer in order.
type eventQueue struct {
	mu      sync.Mutex
	pending []Event
	wake    chan struct{} // capacity 1: "pending may be non-empty"
}

func newEventQueue() *eventQueue {
	return &eventQueue{wake: make(chan struct{}, 1)}
}

// push appends ev; it never blocks.
func (q *eventQueue) push(ev Event) {
	q.mu.Lock()
	q.pending = append(q.pending, ev)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default: // a token is already there; the pump will see ev
	}
}

// run delivers queued events to out in order until stop is closed. It is
// the only sender on out. Events still queued at stop are dropped.
func (q *eventQueue) run(out chan<- Event, stop <-chan struct{}) {
	for {
		q.mu.Lock()
		batch := q.pending
		q.pending = nil
		q.mu.Unlock()
		for _, ev := range batch {
			select {
			case out <- ev:
			case <-stop:
				return
			}
		}
		select {
		case <-q.wake:
		case <-stop:
			return
		}
	}
}

// eventDelegate receives memberlist's membership callbacks.
//
// Contract (memberlist v0.7.0): NotifyJoin, NotifyLeave and NotifyUpdate
// are called from memberlist's own goroutines (packet handler, probe loop,
// suspicion timers, push/pull sync, and, for the local node, from inside
// Create, UpdateNode and Leave) while memberlist holds its node lock. Calls
// never overlap, so their order is the order of changes. They must not
// block, must not call back into memberlist (it would deadlock on the node
// lock) and must not keep the *Node, which memberlist goes on mutating.
// So each one copies what it needs, updates the member table under the
// table's own short mutex and appends an Event to the unbounded queue;
// nothing here waits for the consumer of Events.
type eventDelegate struct {
	log   *slog.Logger
	table *memberTable
	queue *eventQueue
}

var _ memberlist.EventDelegate = (*eventDelegate)(nil)

// NotifyJoin records a new (or returning) member as alive.
func (d *eventDelegate) NotifyJoin(n *memberlist.Node) {
	m, leaving := d.member(n, StatusAlive)
	d.table.set(memberEntry{Member: m, leaving: leaving, since: time.Now()})
	d.queue.push(Event{Type: EventJoin, Member: m})
}

// NotifyLeave records a member as left or failed.
//
// memberlist v0.7.0 does not say which: nodeState.State shadows the
// Node.State it passes here, so n.State is always StateAlive (open issue
// hashicorp/memberlist#293). Leave therefore first re-broadcasts the
// agent's meta with the Leaving flag; a member whose last meta carries it
// left gracefully. n.State == StateLeft is honoured too, for when
// memberlist fixes the field.
func (d *eventDelegate) NotifyLeave(n *memberlist.Node) {
	m, leaving := d.member(n, StatusFailed)
	typ := EventFailed
	if leaving || n.State == memberlist.StateLeft {
		m.Status, typ = StatusLeft, EventLeave
	}
	d.table.set(memberEntry{Member: m, leaving: leaving, since: time.Now()})
	d.queue.push(Event{Type: typ, Member: m})
}

// NotifyUpdate records new meta. A change of the Leaving flag alone is not
// reported: it is the prelude to an EventLeave.
func (d *eventDelegate) NotifyUpdate(n *memberlist.Node) {
	m, leaving := d.member(n, StatusAlive)
	e := memberEntry{Member: m, leaving: leaving, since: time.Now()}
	if old, ok := d.table.get(m.Name); ok {
		e.Status, e.since = old.Status, old.since
		m.Status = old.Status
	}
	old, existed := d.table.set(e)
	if existed && old.Member == m {
		return
	}
	d.queue.push(Event{Type: EventUpdate, Member: m})
}

// member copies n into a Member with the given status and decodes its
// meta; undecodable meta is logged and left empty.
func (d *eventDelegate) member(n *memberlist.Node, status string) (Member, bool) {
	m := Member{Name: n.Name, Addr: n.Address(), Status: status}
	meta, leaving, err := decodeMeta(n.Meta)
	if err == nil && meta.Name != n.Name {
		err = fmt.Errorf("meta names %q but the node is %q", meta.Name, n.Name)
	}
	if err != nil {
		d.log.Warn("ignoring a member's unreadable meta", "member", n.Name, "addr", m.Addr, "err", err)
		return m, false
	}
	m.Meta = meta
	return m, leaving
}

// metaDelegate hands memberlist this agent's encoded meta. memberlist
// calls NodeMeta from Create, UpdateNode and push/pull syncs, possibly
// while holding its node lock; it only reads a field under a short mutex.
// The other methods are unused: this package sends no messages of its own.
type metaDelegate struct {
	g *Gossip
}

var _ memberlist.Delegate = (*metaDelegate)(nil)

// NodeMeta returns the current encoded meta (never over limit).
func (d *metaDelegate) NodeMeta(limit int) []byte {
	b := d.g.metaBytes()
	if len(b) > limit {
		// encode checked against MetaMaxSize, which is what memberlist
		// passes; a smaller limit would be a memberlist change.
		d.g.log.Error("meta over memberlist's limit; sending none", "size", len(b), "limit", limit)
		return nil
	}
	return b
}

// NotifyMsg ignores user messages (none are sent).
func (d *metaDelegate) NotifyMsg([]byte) {}

// GetBroadcasts has nothing to broadcast.
func (d *metaDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState has no extra state for push/pull.
func (d *metaDelegate) LocalState(join bool) []byte { return nil }

// MergeRemoteState ignores remote extra state.
func (d *metaDelegate) MergeRemoteState(buf []byte, join bool) {}
