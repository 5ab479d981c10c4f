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

// watchQuiet is how long a WatchMany stream may receive nothing before
// the client asks whether its agent still answers. A variable for tests.
var watchQuiet = 5 * time.Second

// mindSilence ends the stream when it has been quiet for watchQuiet and
// its agent leaves a health check unanswered. It runs beside the
// stream's receive goroutine until the stream ends.
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
		if quiet := time.Since(monotime.Time(s.heard.Load())); quiet < watchQuiet {
			t.Reset(watchQuiet - quiet)
			continue
		}
		if s.m.probe(s.ctx) && s.ctx.Err() == nil {
			s.cancel(errAgentSilent)
			return
		}
		t.Reset(watchQuiet)
	}
}

// silentEnd returns the error that ends the stream's watches after Recv
// failed with err: Unavailable, naming the agent, when the client left a
// silent agent (the watches then resume elsewhere), else err.
func (s *muxStream) silentEnd(err error) error {
	if !errors.Is(context.Cause(s.ctx), errAgentSilent) {
		return err
	}
	s.m.c.log.Info("agent does not answer, not even a health check; resuming its watches on the next endpoint", "endpoint", s.m.addr)
	return status.Error(codes.Unavailable, fmt.Sprintf("agent %s: %v", s.m.addr, errAgentSilent))
}
