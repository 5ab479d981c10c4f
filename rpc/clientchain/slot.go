package clientchain

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zrpcio/zrpc/internal/monotime"
)

// maxSlot is the widest slot of a slotClock: how much later than its
// timeout a call may be ended.
const maxSlot = 10 * time.Millisecond

// callsPerShard is how many calls of a slot bring another shard into use.
const callsPerShard = 32

// slotClock hands out shared deadline contexts for one timeout d. Time (the
// monotonic clock's, internal/monotime) is cut into slots of width min(d/128, maxSlot); every call that starts in
// the same slot shares a context.WithDeadline ending d after the slot's
// end. So a process holds a few timers per slot (at most d/width+1 slots
// live, 129 for the default 2 s) instead of one per call, and a call is
// bounded by at least d and by less than d plus one slot.
//
// Every context derived from a slot's context registers with it under its
// lock, so a busy slot is split into shards (up to 16 per P), each a
// context of its own made on first use, and a call takes a random one:
// concurrent calls rarely meet on one lock. A slot uses one more shard for
// about every callsPerShard calls it has had (counted by sampling, so that
// calls do not all write one counter), so making shards costs a call a
// fraction of an allocation however light the traffic.
type slotClock struct {
	d      time.Duration
	width  int64 // nanoseconds
	shards int
	cur    atomic.Pointer[timeSlot]
	mu     sync.Mutex // serializes making a new slot
}

// timeSlot is one slot's shared contexts. Their cancel funcs are never
// called before the deadline: the contexts' own timers end them, and then
// nothing holds a timer any more.
type timeSlot struct {
	index  int64 // start / width
	end    time.Time
	calls  atomic.Int64
	shards []atomic.Pointer[slotShard]
}

type slotShard struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func newSlotClock(d time.Duration) *slotClock {
	w := min(d/128, maxSlot)
	if w <= 0 {
		w = 1
	}
	return &slotClock{d: d, width: int64(w), shards: 16 * runtime.GOMAXPROCS(0)}
}

// slot returns a shared context for a call starting at now.
func (c *slotClock) slot(now time.Time) context.Context {
	index := monotime.Of(now) / c.width
	s := c.cur.Load()
	// A later slot (made by a call that read the clock after this one)
	// ends later: still at least d from now.
	if s == nil || s.index < index {
		s = c.advance(index)
	}
	// One call in callsPerShard, at random, adds callsPerShard to the
	// count, so that concurrent calls rarely write the same word.
	r := rand.Uint64()
	calls := s.calls.Load()
	if r%callsPerShard == 0 {
		calls = s.calls.Add(callsPerShard)
	}
	inUse := min(len(s.shards), 1+int(calls/callsPerShard))
	shard := &s.shards[(r>>32)%uint64(inUse)]
	if sh := shard.Load(); sh != nil {
		return sh.ctx
	}
	sh := &slotShard{}
	sh.ctx, sh.cancel = context.WithDeadline(context.Background(), s.end)
	if !shard.CompareAndSwap(nil, sh) {
		sh.cancel() // another call made this shard first
		return shard.Load().ctx
	}
	return sh.ctx
}

// advance makes the slot of index current, unless a slot as late is
// current already, and returns the current slot.
func (c *slotClock) advance(index int64) *timeSlot {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.cur.Load(); s != nil && s.index >= index {
		return s
	}
	// On the monotonic clock: a deadline on the wall clock's (time.Unix)
	// made every call fail at once while a clock stepped back stayed
	// behind the current slot's start.
	end := monotime.Time((index + 1) * c.width).Add(c.d)
	s := &timeSlot{index: index, end: end, shards: make([]atomic.Pointer[slotShard], c.shards)}
	c.cur.Store(s)
	return s
}
