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
	// others is the line shared by the senders past max, and
	// otherSenders those of them warned about since it was last written
	// (at most max of them are counted); swept is when senders was last
	// rid of the quiet ones.
	others       line
	otherSenders map[string]struct{}
	swept        time.Time
}

type line struct {
	written time.Time
	held    int
}

// New returns a Limiter that lets one warning per sender through each
// quiet, remembering at most max senders; now is the clock (time.Now).
func New(quiet time.Duration, max int, now func() time.Time) *Limiter {
	return &Limiter{quiet: quiet, max: max, now: now, senders: make(map[string]*line), otherSenders: make(map[string]struct{})}
}

// Seen notes a warning about sender: pass says whether to write it, held
// how many about sender were held back since the last one written (0 for
// a sender past the bound: those are not counted).
func (l *Limiter) Seen(sender string) (pass bool, held int) {
	n := l.Note(sender)
	if n.Shared {
		return n.Pass, 0
	}
	return n.Pass, n.Held
}

// Verdict is what Note says of one warning.
type Verdict struct {
	// Pass: write the warning now.
	Pass bool
	// Shared: the sender is past the bound, and the line is the one
	// shared by all the senders past it.
	Shared bool
	// Held is how many warnings were held back since the line was last
	// written, this one not counted: those about the sender, or when
	// Shared those about all the senders past the bound.
	Held int
	// Senders, when Shared, is how many senders past the bound were
	// warned about since the shared line was last written, this one
	// included (counted up to the bound).
	Senders int
}

// Note notes a warning about sender and says whether to write it, and,
// when it is written, what it stands for: the ones held back since the
// last, and whether it is the line the senders past the bound share.
func (l *Limiter) Note(sender string) Verdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	s := l.senders[sender]
	if s != nil && now.Sub(s.written) < l.quiet {
		s.held++
		return Verdict{}
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
			return l.other(sender, now)
		}
		s = &line{}
		l.senders[sender] = s
	}
	held := s.held
	s.written, s.held = now, 0
	return Verdict{Pass: true, Held: held}
}

// other notes a warning about a sender past the bound.
func (l *Limiter) other(sender string, now time.Time) Verdict {
	if len(l.otherSenders) < l.max {
		l.otherSenders[sender] = struct{}{}
	}
	if !l.others.written.IsZero() && now.Sub(l.others.written) < l.quiet {
		l.others.held++
		return Verdict{}
	}
	v := Verdict{Pass: true, Shared: true, Held: l.others.held, Senders: len(l.otherSenders)}
	l.others = line{written: now}
	clear(l.otherSenders)
	return v
}
