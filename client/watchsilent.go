package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/internal/monotime"
)

// A WatchMany stream to an agent that hangs (stopped, its VM paused, cut
// off by a network that drops its packets) stays open and quiet: its
// watches would deliver nothing until the connection's keepalive gives
// up (15 s), while other agents serve the registry. When the client has
// other endpoints, a stream quiet for watchQuiet asks the agent for a
// health check on the same connection (silent.go); an agent that leaves
// it unanswered for probeTimeout is left: the stream ends Unavailable,
// and each watch resumes on the next endpoint from its last revision. An
// agent that answers is only quiet (nothing changed) and is asked again
// after the next watchQuiet: an idle stream costs its agent one health
// check per watchQuiet.
//
// An agent can answer health checks while its watches send nothing (the
// goroutine that sends them waiting on a lock): the stream would stay on
// it for good, and the registry's changes would never reach its watches.
// So the client also asks the agent for progress notifications
// (WatchManyRequest.progress_notify_ms, every watchProgress): a response
// of the stream with no events, sent by the goroutine that sends the
// watches' events whenever it has sent nothing for the interval. The
// agent answers the first ask at once; from then on, a stream that hears
// nothing, neither events nor progress, for progressMissed of the
// intervals the agent agreed to, while the agent answers its health
// check, is left the same way (errNoWatchProgress). An agent that never
// answered the ask (one from before progress notifications) is only
// health-checked, as before; but a new stream to an agent that was left
// this way expects progress from the start (watchMux.agreed), since a
// stuck agent does not answer the ask. A stream whose agent sends
// progress is never quiet for watchQuiet, so it costs no health checks.

// watchQuiet is how long a WatchMany stream may receive nothing before
// the client asks whether its agent still answers. A variable for tests.
var watchQuiet = 5 * time.Second

// watchProgress is the interval of progress notifications a client with
// other endpoints asks for: below watchQuiet, so that a stream whose agent
// sends them is never quiet long enough to be health-checked. A variable
// for tests.
var watchProgress = 2500 * time.Millisecond

// progressMissed is how many intervals of progress notifications a
// stream may miss before it is left.
const progressMissed = 3

// errNoWatchProgress ends the stream of an agent that answers health
// checks but sends nothing on the stream, not even the progress it
// agreed to send.
var errNoWatchProgress = errors.New("the agent answers health checks but its WatchMany stream sends nothing, not even the progress notifications it agreed to send: its watches are stuck")

// mindSilence ends the stream when it has been quiet for watchQuiet and
// its agent leaves a health check unanswered, or when it has missed
// progressMissed of the progress notifications its agent agreed to send.
// It runs beside the stream's receive goroutine until the stream ends.
func (s *muxStream) mindSilence() {
	defer s.m.receivers.Done()
	t := time.NewTimer(watchQuiet)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		quiet := time.Since(monotime.Time(s.heard.Load()))
		limit := progressMissed * time.Duration(s.progressEvery.Load()) // 0: no progress agreed
		check := watchQuiet
		if limit > 0 {
			check = min(check, limit)
		}
		if quiet < check {
			t.Reset(check - quiet)
			continue
		}
		if s.m.probe(s.ctx) && s.ctx.Err() == nil {
			s.cancel(errAgentSilent)
			return
		}
		if limit > 0 && quiet >= limit && s.ctx.Err() == nil {
			s.cancel(fmt.Errorf("%w (nothing received for %s; progress agreed every %s)",
				errNoWatchProgress, quiet.Round(time.Millisecond), limit/progressMissed))
			return
		}
		next := watchQuiet
		if limit > quiet {
			next = min(next, limit-quiet)
		}
		t.Reset(next)
	}
}

// silentEnd returns the error that ends the stream's watches after Recv
// failed with err: Unavailable, naming the agent, when the client left a
// silent agent or one whose watches are stuck (the watches then resume
// elsewhere), else err.
func (s *muxStream) silentEnd(err error) error {
	cause := context.Cause(s.ctx)
	switch {
	case errors.Is(cause, errAgentSilent):
		s.m.c.log.Info("agent does not answer, not even a health check; resuming its watches on the next endpoint", "endpoint", s.m.addr)
	case errors.Is(cause, errNoWatchProgress):
		s.m.c.log.Warn("agent answers health checks but its watch stream sends nothing, not even progress; resuming its watches on the next endpoint",
			"endpoint", s.m.addr, "err", cause)
	default:
		return err
	}
	return status.Error(codes.Unavailable, fmt.Sprintf("agent %s: %v", s.m.addr, cause))
}
