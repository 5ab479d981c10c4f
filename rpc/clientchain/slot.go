package clientchain

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// maxSlot is the widest slot of a slotClock: how much later than its
// timeout a call may be ended.
const maxSlot = 10 * time.Millisecond

// slotClock hands out shared deadline contexts for one timeout d. Time is
// cut into slots of width min(d/128, maxSlot); every call that starts in
// the same slot shares one context.WithDeadline ending d after the slot's
// end. So a process holds one timer per slot (at most d/width+1 live, 129
// for the default 2 s) instead of one per call, and a call is bounded by
// at least d and by less than d plus one slot.
type slotClock struct {
	d     time.Duration
	width int64 // nanoseconds
	cur   atomic.Pointer[timeSlot]
	mu    sync.Mutex // serializes making a new slot
}

// timeSlot is one slot's shared context. Its cancel is never called
// before the deadline: the context's own timer ends it, and then nothing
// holds a timer any more.
type timeSlot struct {
	index  int64 // start / width
	ctx    context.Context
	cancel context.CancelFunc
}

func newSlotClock(d time.Duration) *slotClock {
	w := min(d/128, maxSlot)
	if w <= 0 {
		w = 1
	}
	return &slotClock{d: d, width: int64(w)}
}

// slot returns the shared context of calls starting at now.
func (c *slotClock) slot(now time.Time) context.Context {
	index := now.UnixNano() / c.width
	if s := c.cur.Load(); s != nil && s.index >= index {
		// A later slot (made by a call that read the clock after this
		// one) ends later: still at least d from now.
		return s.ctx
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.cur.Load(); s != nil && s.index >= index {
		return s.ctx
	}
	s := &timeSlot{index: index}
	end := time.Unix(0, (index+1)*c.width).Add(c.d)
	s.ctx, s.cancel = context.WithDeadline(context.Background(), end)
	c.cur.Store(s)
	return s.ctx
}
