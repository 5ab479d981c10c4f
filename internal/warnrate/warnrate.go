// Package warnrate lets a warning about one sender (a host, an address)
// through at most once per quiet period and counts the ones held back in
// between, so that a stranger repeating itself costs one log line a
// minute, not one per packet or connection. It remembers a bounded number
// of senders: past that, the senders it cannot remember share one warning
// per quiet period, so that a stranger sending from ever new addresses
// (spoofed UDP sources, an IPv6 prefix) costs no more.
package warnrate

import (
	"sync"
	"time"
)

// Limiter remembers when a warning about each sender was last let
// through and how many were held back since. Its methods may be called
// from any goroutine.
type Limiter struct {
	quiet time.Duration
	max   int
	now   func() time.Time

	mu      sync.Mutex
	senders map[string]*line
	// othersWritten is when a warning about a sender past max last
	// passed; swept when senders was last rid of the quiet ones.
	othersWritten time.Time
	swept         time.Time
}

type line struct {
	written time.Time
	held    int
}

// New returns a Limiter that lets one warning per sender through each
// quiet, remembering at most max senders; now is the clock (time.Now).
func New(quiet time.Duration, max int, now func() time.Time) *Limiter {
	return &Limiter{quiet: quiet, max: max, now: now, senders: make(map[string]*line)}
}

// Seen notes a warning about sender: pass says whether to write it, held
// how many about sender were held back since the last one written (0 for
// a sender past the bound: those are not counted).
func (l *Limiter) Seen(sender string) (pass bool, held int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	s := l.senders[sender]
	if s != nil && now.Sub(s.written) < l.quiet {
		s.held++
		return false, 0
	}
	if s == nil {
		if len(l.senders) >= l.max && now.Sub(l.swept) >= l.quiet {
			// At most once a quiet period: a sender repeating past the
			// bound would otherwise cost a walk of the whole table.
			l.swept = now
			for k, old := range l.senders {
				if now.Sub(old.written) >= l.quiet {
					delete(l.senders, k)
				}
			}
		}
		if len(l.senders) >= l.max {
			// Too many at once to remember: they share one line.
			if !l.othersWritten.IsZero() && now.Sub(l.othersWritten) < l.quiet {
				return false, 0
			}
			l.othersWritten = now
			return true, 0
		}
		s = &line{}
		l.senders[sender] = s
	}
	held = s.held
	s.written, s.held = now, 0
	return true, held
}
