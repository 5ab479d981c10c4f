package gossip

import (
	"fmt"
	"sync"
	"time"
)

// EventType says what happened to a member.
type EventType int

const (
	// EventJoin: a member appeared, or came back after failing or leaving.
	EventJoin EventType = iota + 1
	// EventLeave: a member said goodbye (Leave) before going away. If its
	// goodbye overtook its leave notice, EventLeave follows an EventFailed
	// for the same member.
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
	// yet declared dead. memberlist v0.7.0 does not expose suspicion: it
	// has no callback for it, and the Node.State it hands out is never set
	// (its internal nodeState.State shadows it, hashicorp/memberlist#293).
	// So this package never reports it today: a suspect member is listed
	// as alive until it is declared dead.
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
	// Since is when this agent's gossip saw Status begin (Members and
	// Member set it; events leave it zero).
	Since time.Time
}

// LacksCluster reports whether the member is alive but has not applied
// the log of cluster (its meta carries no cluster id while cluster, the
// asking agent's, is known): a new, wiped or replaced data dir.
func (m Member) LacksCluster(cluster string) bool {
	return m.Status == StatusAlive && m.Meta.ClusterID == "" && cluster != ""
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
