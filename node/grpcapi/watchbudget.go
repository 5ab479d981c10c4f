package grpcapi

import (
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// watchPagePatience is how long a snapshot page waits for room in the
// budget before it ends the streams with the most queued, as events do.
const watchPagePatience = time.Second

// watchBudget bounds the bytes queued for all the watch streams of an
// agent together: the encoded size of the events each is sending, and of
// those measured behind a send that waits for its reader. Each stream's
// own backlog is bounded too, but ten thousand slow readers within their
// own bounds could still hold gigabytes: a charge that would take the
// total past the budget ends the stream with the most charged instead,
// with the usual "watch too slow, resume from revision N", until the
// charge fits (the charging stream itself when it has the most). A charge
// of events never waits, so neither does the registry. A snapshot page
// (sent by a stream with nothing else charged) waits instead, first come
// first served, up to patience for room: when many watchers start at
// once (an agent restarted), their snapshots go out as the budget allows
// instead of ending each other. The total passes the budget by at most
// the one response a stream with nothing charged always takes.
type watchBudget struct {
	limit    int64
	patience time.Duration
	total    atomic.Int64 // bytes charged by all streams
	// largestCharge is the largest response charged so far.
	largestCharge atomic.Int64

	// mu guards streams and serialises ending them; it is taken before
	// a stream's mu, never after.
	mu      sync.Mutex
	streams map[*watchStream]func()

	// roomMu guards waiters, the snapshot pages waiting for room in
	// order; no other lock is taken while it is held.
	roomMu  sync.Mutex
	waiters []*budgetWaiter
	waiting atomic.Int32 // len(waiters), read by releases without roomMu
}

// budgetWaiter is a snapshot page waiting for n bytes of room.
type budgetWaiter struct {
	n       int64
	granted chan struct{} // closed once n is reserved for it
}

func newWatchBudget(limit int64) *watchBudget {
	if limit <= 0 {
		limit = math.MaxInt64
	}
	return &watchBudget{limit: limit, patience: watchPagePatience, streams: make(map[*watchStream]func())}
}

// release gives n bytes back and lets waiting pages that now fit in.
func (b *watchBudget) release(n int64) {
	b.total.Add(-n)
	if b.waiting.Load() > 0 {
		b.grant()
	}
}

// grant reserves room for the waiting pages, oldest first, while they fit
// (the first one also when nothing at all is charged).
func (b *watchBudget) grant() {
	b.roomMu.Lock()
	defer b.roomMu.Unlock()
	for len(b.waiters) > 0 {
		w := b.waiters[0]
		if !b.reserve(w.n) {
			if b.total.Load() != 0 {
				return
			}
			b.total.Add(w.n)
		}
		close(w.granted)
		b.waiters[0] = nil
		b.waiters = b.waiters[1:]
		b.waiting.Add(-1)
	}
}

// chargeWait charges q, which has nothing charged, with a snapshot page of
// n bytes: at once when it fits, otherwise once room is given back, in
// turn with other waiting pages. After the budget's patience it charges
// as events do, ending the streams with the most queued.
func (b *watchBudget) chargeWait(ctx context.Context, q *watchStream, n int64) error {
	b.noteCharge(n)
	if b.reserve(n) {
		return b.charged(q, n)
	}
	w := &budgetWaiter{n: n, granted: make(chan struct{})}
	b.roomMu.Lock()
	b.waiters = append(b.waiters, w)
	b.waiting.Add(1)
	b.roomMu.Unlock()
	b.grant() // room given back before this page was in line
	timer := time.NewTimer(b.patience)
	defer timer.Stop()
	select {
	case <-w.granted:
		return b.charged(q, n)
	case <-ctx.Done():
	case <-timer.C:
	}
	b.roomMu.Lock()
	i := slices.Index(b.waiters, w)
	if i >= 0 {
		b.waiters = slices.Delete(b.waiters, i, i+1)
		b.waiting.Add(-1)
	}
	b.roomMu.Unlock()
	if i < 0 { // granted meanwhile
		return b.charged(q, n)
	}
	b.grant() // pages behind this one may fit
	if err := ctx.Err(); err != nil {
		return err
	}
	if !b.charge(q, n) {
		return errWatchBehind
	}
	return nil
}

// charged adds n, already reserved, to what q is charged.
func (b *watchBudget) charged(q *watchStream, n int64) error {
	if !q.addCharge(n) {
		return errWatchBehind
	}
	return nil
}

// join starts charging q; end is how the budget ends q's stream.
func (b *watchBudget) join(q *watchStream, end func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q.budget = b
	b.streams[q] = end
}

// leave stops charging q and gives back what it held.
func (b *watchBudget) leave(q *watchStream) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.streams, q)
	q.mu.Lock()
	defer q.mu.Unlock()
	b.dropLocked(q)
}

// dropLocked gives back everything q was charged and refuses it further
// charges. The caller holds q.mu.
func (b *watchBudget) dropLocked(q *watchStream) {
	b.release(q.charged)
	q.charged = 0
	q.overBudget = true
}

// charge charges q with n bytes, first ending the streams with the most
// queued while the total would pass the budget. It reports false, marking
// q over the budget, when q itself has the most or was ended.
func (b *watchBudget) charge(q *watchStream, n int64) bool {
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
		b.streams[victim]()
		delete(b.streams, victim)
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

// largestLocked returns the stream charged the most and its charge. The
// caller holds b.mu.
func (b *watchBudget) largestLocked() (*watchStream, int64) {
	var victim *watchStream
	var most int64
	for q := range b.streams {
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
func (q *watchStream) addCharge(n int64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.overBudget {
		q.budget.release(n)
		return false
	}
	q.charged += n
	return true
}
