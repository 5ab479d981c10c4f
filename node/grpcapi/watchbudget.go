package grpcapi

import (
	"math"
	"sync"
	"sync/atomic"
)

// watchBudget bounds the bytes queued for all the watch streams of an
// agent together (encoded size of the events read for them and not sent
// yet). Each stream's own backlog is bounded too, but ten thousand slow
// readers within their own bounds could still hold gigabytes: a push that
// would take the total past the budget ends the stream with the most
// queued instead, with the usual "watch too slow, resume from revision N",
// until the push fits (the pushing stream itself when it has the most). A
// push never waits, so neither does the registry. The total passes the
// budget by at most the one response an empty queue always takes.
type watchBudget struct {
	limit int64
	total atomic.Int64 // bytes charged by all queues
	// largestCharge is the largest response charged so far.
	largestCharge atomic.Int64

	// mu guards queues and serialises ending streams; it is taken before
	// a queue's mu, never after.
	mu     sync.Mutex
	queues map[*watchQueue]func()
}

func newWatchBudget(limit int64) *watchBudget {
	if limit <= 0 {
		limit = math.MaxInt64
	}
	return &watchBudget{limit: limit, queues: make(map[*watchQueue]func())}
}

// join starts charging q; end is how the budget ends q's stream.
func (b *watchBudget) join(q *watchQueue, end func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q.budget = b
	b.queues[q] = end
}

// leave stops charging q and gives back what it held.
func (b *watchBudget) leave(q *watchQueue) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.queues, q)
	q.mu.Lock()
	defer q.mu.Unlock()
	b.dropLocked(q)
}

// dropLocked gives back everything q was charged and refuses it further
// charges. The caller holds q.mu.
func (b *watchBudget) dropLocked(q *watchQueue) {
	b.total.Add(-q.charged)
	q.charged = 0
	q.overBudget = true
}

// charge charges q with n bytes, first ending the streams with the most
// queued while the total would pass the budget. It reports false, marking
// q over the budget, when q itself has the most or was ended.
func (b *watchBudget) charge(q *watchQueue, n int64) bool {
	b.noteCharge(n)
	if b.reserve(n) {
		return q.addCharge(n)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for !b.reserve(n) {
		victim, most := b.largestLocked()
		if most == 0 {
			// Nothing else is queued: one response may pass the budget.
			b.total.Add(n)
			break
		}
		victim.mu.Lock()
		b.dropLocked(victim)
		victim.mu.Unlock()
		if victim == q {
			return false
		}
		b.queues[victim]()
		delete(b.queues, victim)
	}
	return q.addCharge(n)
}

// reserve adds n to the total if it stays within the budget.
func (b *watchBudget) reserve(n int64) bool {
	for {
		cur := b.total.Load()
		if cur+n > b.limit {
			return false
		}
		if b.total.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// noteCharge records the largest single charge, the most the total may
// pass the budget by.
func (b *watchBudget) noteCharge(n int64) {
	for {
		cur := b.largestCharge.Load()
		if n <= cur || b.largestCharge.CompareAndSwap(cur, n) {
			return
		}
	}
}

// largestLocked returns the queue charged the most and its charge. The
// caller holds b.mu.
func (b *watchBudget) largestLocked() (*watchQueue, int64) {
	var victim *watchQueue
	var most int64
	for q := range b.queues {
		q.mu.Lock()
		c := q.charged
		q.mu.Unlock()
		if victim == nil || c > most {
			victim, most = q, c
		}
	}
	return victim, most
}

// addCharge adds n to what q is charged, which the budget's total already
// counts. When q has been ended it takes n back off the total and reports
// false.
func (q *watchQueue) addCharge(n int64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.overBudget {
		q.budget.total.Add(-n)
		return false
	}
	q.charged += n
	return true
}
