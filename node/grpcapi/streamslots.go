package grpcapi

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/internal/warnrate"
)

// streamRefusalWarnEvery is how often, at most, an agent logs that it
// refused streams of one kind.
const streamRefusalWarnEvery = time.Minute

// streamSlots bounds the streams of one kind (Watch, Session) an agent
// serves at once. Every open stream holds a goroutine and gRPC's state for
// it on the agent (about 15 KiB for a Watch), and a session also a record
// that every replica keeps while it lasts; without a bound, callers could
// open streams until the agent ran out of memory. A stream past the bound
// is refused at once, ResourceExhausted naming the limit, instead of
// waiting for a slot: a watch that hung there would look like a quiet
// service.
type streamSlots struct {
	kind string // "Watch", "Session"
	what string // what a slot holds, plural: "watches", "Session streams"
	key  string // the configuration key that sets max
	max  int64  // 0: no bound
	open atomic.Int64

	refused func(kind string) // counts a refusal (the agent's metric)
	warn    *warnrate.Limiter
	log     *slog.Logger
}

func newStreamSlots(kind, what, key string, max int, refused func(string), log *slog.Logger) *streamSlots {
	return &streamSlots{kind: kind, what: what, key: key, max: int64(max), refused: refused, log: log,
		warn: warnrate.New(streamRefusalWarnEvery, 1, time.Now)}
}

// take holds a slot for a stream until release is called, or fails with
// apierr.ErrQuotaExceeded when all are held.
func (s *streamSlots) take() (release func(), err error) {
	if n := s.open.Add(1); s.max > 0 && n > s.max {
		s.open.Add(-1)
		s.refused(s.kind)
		if pass, held := s.warn.Seen(s.kind); pass {
			s.log.Warn("refused streams past this agent's limit; raise "+s.key+" if the callers are legitimate",
				"kind", s.kind, "limit", s.max, "refused", held+1)
		}
		return nil, fmt.Errorf("%w: this agent serves %d %s, the most it takes (%s, set by --%s on this agent): close some, or open the stream on another agent",
			apierr.ErrQuotaExceeded, s.max, s.what, s.key, strings.ReplaceAll(s.key, "_", "-"))
	}
	return func() { s.open.Add(-1) }, nil
}

// Open returns how many streams hold a slot.
func (s *streamSlots) Open() int64 { return s.open.Load() }

// StreamCounts are the Watch and Session streams an agent serves and the
// most it serves at once (0: no limit).
type StreamCounts struct {
	Watches, MaxWatches   int64
	Sessions, MaxSessions int64
}

// Streams returns the Watch and Session streams this agent serves, and
// their limits.
func (s *Registry) Streams() StreamCounts {
	return StreamCounts{Watches: s.watches.Open(), MaxWatches: s.watches.max, Sessions: s.sessions.Open(), MaxSessions: s.sessions.max}
}
