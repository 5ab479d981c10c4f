// Package waitguard watches a wait on another process (a call, a send or
// a receive on a stream) that may never end by itself: a peer that is
// stopped (SIGSTOP, a paused VM) or behind a network that drops its
// packets keeps its connection open, so nothing fails until a keepalive
// gives up. A guard looks, while the wait lasts, whether there is reason
// to give up on it (a health check unanswered, gossip declaring the peer
// failed, a bound passed), and when there is, cancels the wait.
package waitguard

import (
	"sync"
	"time"
)

// Start begins watching a wait: after next(), and again after each next()
// while the wait lasts, it calls check; when check returns a reason to
// give up, it calls cancel, which must end the wait, and looks no more.
// stop ends the watch and returns the reason it gave up, nil when it did
// not: once stop has returned, cancel is not called. check runs on a
// timer's goroutine and may block (a health check); it must not wait for
// stop.
func Start(next func() time.Duration, check func() error, cancel func()) (stop func() error) {
	var (
		mu    sync.Mutex
		ended bool
		why   error
		t     *time.Timer
	)
	mu.Lock() // t is set before its function reads it
	t = time.AfterFunc(next(), func() {
		cause := check()
		mu.Lock()
		defer mu.Unlock()
		switch {
		case ended:
		case cause != nil:
			why, ended = cause, true
			cancel()
		default:
			t.Reset(next())
		}
	})
	mu.Unlock()
	return func() error {
		mu.Lock()
		defer mu.Unlock()
		ended = true
		t.Stop()
		return why
	}
}

// Every returns a next function for Start: every d.
func Every(d time.Duration) func() time.Duration { return func() time.Duration { return d } }
