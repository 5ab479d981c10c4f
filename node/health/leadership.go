package health

import (
	"context"
	"sync"
	"time"
)

// confirmWait bounds one confirmation of leadership (Config.ConfirmLeader):
// the renewals waiting for it give up with their own contexts, but the
// confirmation they share goes on without them, so it needs a bound of
// its own.
const confirmWait = 5 * time.Second

// leaderConfirmations batches the confirmations of leadership that TTL
// renewals need before they answer. A renewal must be answered by a
// confirmation that began after it arrived: one that began before may
// have been answered by followers that have voted for another leader
// since. So a renewal that arrives while no confirmation runs starts one,
// and the renewals that arrive while one runs all wait for the next, which
// starts when that one ends: however many renewals come at once (a
// hundred thousand instances renewing every few seconds), they cost at
// most two confirmations in a row, not one each.
type leaderConfirmations struct {
	confirm func(ctx context.Context) (uint64, error)
	mu      sync.Mutex
	running bool
	// next is the round the renewals arrived while one runs wait for; nil
	// until one arrives.
	next *confirmRound
}

// confirmRound is one confirmation and the renewals waiting for it.
type confirmRound struct {
	done chan struct{} // closed when index and err are set
	// index is the leader's read index the confirmation found: what was
	// committed when it began.
	index uint64
	err   error
	// waiters counts the renewals that joined the round (guarded by
	// leaderConfirmations.mu).
	waiters int
}

// wait returns the read index of a confirmation that began after wait was
// called once it found that this agent still leads, and that
// confirmation's error when it did not; ctx's error if ctx ends first.
func (c *leaderConfirmations) wait(ctx context.Context) (uint64, error) {
	c.mu.Lock()
	if c.next == nil {
		c.next = &confirmRound{done: make(chan struct{})}
	}
	r := c.next
	r.waiters++
	if !c.running {
		c.running, c.next = true, nil
		go c.run(r)
	}
	c.mu.Unlock()
	select {
	case <-r.done:
		return r.index, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run confirms leadership for r, then for each round that renewals joined
// meanwhile, until none did. Each round lasts at most confirmWait, and a
// round follows only renewals that arrived during the one before, so the
// goroutine ends once renewals stop coming.
func (c *leaderConfirmations) run(r *confirmRound) {
	for r != nil {
		ctx, cancel := context.WithTimeout(context.Background(), confirmWait)
		r.index, r.err = c.confirm(ctx)
		cancel()
		close(r.done)
		c.mu.Lock()
		r, c.next = c.next, nil
		c.running = r != nil
		c.mu.Unlock()
	}
}
