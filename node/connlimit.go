package node

import (
	"log/slog"
	"sync"
	"time"
)

// connRefusalWarnEvery is how often, at most, the agent warns about one
// client IP's connections refused past max_conns_per_client.
const connRefusalWarnEvery = time.Minute

// connRefusals counts and logs the gRPC connections internal/connlimit
// closed: a warning per client IP a minute at most, saying how many since
// the last, and the metric for every one.
type connRefusals struct {
	log   *slog.Logger
	count func()

	mu     sync.Mutex
	warned map[string]time.Time // host -> when last warned
	since  map[string]int       // host -> refused since then, unreported
}

func newConnRefusals(log *slog.Logger, count func()) *connRefusals {
	return &connRefusals{log: log, count: count, warned: make(map[string]time.Time), since: make(map[string]int)}
}

func (r *connRefusals) refused(host string, limit int) {
	if r.count != nil {
		r.count()
	}
	now := time.Now()
	r.mu.Lock()
	r.since[host]++
	if last, ok := r.warned[host]; ok && now.Sub(last) < connRefusalWarnEvery {
		r.mu.Unlock()
		return
	}
	n := r.since[host]
	r.warned[host], r.since[host] = now, 0
	for h, t := range r.warned { // forget hosts quiet for long
		if now.Sub(t) > 10*connRefusalWarnEvery {
			delete(r.warned, h)
			delete(r.since, h)
		}
	}
	r.mu.Unlock()
	r.log.Warn("closed gRPC connections from a client that holds the most it may keep open; raise max_conns_per_client if it is a legitimate client",
		"client", host, "limit", limit, "refused", n)
}
