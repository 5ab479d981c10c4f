package client

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/internal/waitguard"
)

// An agent that is stopped (SIGSTOP, a paused VM) or cut off by a network
// that drops its packets keeps its connections open: a call to it neither
// fails nor returns, and the client would wait on it until the call's
// deadline, or until the connection's keepalive gives up (15 s), with
// every call of those seconds, although other endpoints answer. A call
// that waits on an agent therefore asks it, every endpointProbe, on the
// same connection, for a gRPC health check: an agent that does not
// answer that within probeTimeout is silent, and the call moves on to the
// next endpoint. An agent that answers the check is only slow (a write
// waiting for an election) and is waited for, up to Config.AttemptTimeout
// (callSlow's calls, which an agent may rightly hold longer, for as long
// as their context lets them): past it the agent is taken as stuck (a
// handler that hangs, a disk that does not return) and the call moves on
// too. Writes carry request ids, so one the left agent did apply is
// applied once.

// endpointProbe and probeTimeout bound how long a call waits on a silent
// agent: a second, the time a 3-agent cluster takes to elect a leader when
// its leader goes silent. An agent that runs answers a health check in
// milliseconds, even a loaded one; one that took over probeTimeout would
// only send the call on to the next endpoint, as it would a retry (writes
// carry request ids). Variables for tests.
var (
	endpointProbe = 500 * time.Millisecond
	probeTimeout  = 500 * time.Millisecond
)

// errAgentSilent ends a call to an agent that did not answer a health
// check.
var errAgentSilent = errors.New("the agent does not answer, not even a health check")

// errNoAnswer ends an attempt whose agent answered its health checks but
// not the call within Config.AttemptTimeout.
var errNoAnswer = errors.New("no answer within the attempt's bound")

// attemptWithin returns attempt with limit.
func (c *Client) attemptWithin(limit time.Duration) func(context.Context, *endpoint, func(context.Context, *endpoint) error) error {
	return func(ctx context.Context, ep *endpoint, fn func(context.Context, *endpoint) error) error {
		return c.attempt(ctx, ep, limit, fn)
	}
}

// attempt runs fn against ep, giving up on ep when it turns silent or,
// limit > 0, does not answer within limit, with an Unavailable error
// (call then tries the next endpoint). With one endpoint there is
// nothing to move to, and fn waits as long as ctx lets it.
func (c *Client) attempt(ctx context.Context, ep *endpoint, limit time.Duration, fn func(context.Context, *endpoint) error) error {
	if len(c.endpoints) < 2 {
		return fn(ctx, ep)
	}
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if limit > 0 {
		// A deadline, not a cancel: the agent sees it too and stops.
		var stopLimit context.CancelFunc
		actx, stopLimit = context.WithTimeoutCause(actx, limit, errNoAnswer)
		defer stopLimit()
	}
	stop := waitguard.Start(waitguard.Every(endpointProbe), func() error {
		if ep.silent(actx) && actx.Err() == nil {
			return errAgentSilent
		}
		return nil
	}, func() { cancel(errAgentSilent) })
	err := fn(actx, ep)
	if err != nil {
		settle(actx)
	}
	why := stop()
	switch {
	case err == nil || ctx.Err() != nil:
		return err
	case why != nil:
		c.log.Info("agent does not answer, not even a health check; trying the next", "endpoint", ep.addr)
		return status.Error(codes.Unavailable, errAgentSilent.Error())
	case errors.Is(context.Cause(actx), errNoAnswer):
		c.log.Info("agent answers health checks but not the call; trying the next", "endpoint", ep.addr, "attempt_timeout", limit)
		return status.Errorf(codes.Unavailable, "no answer within %s (client.Config.AttemptTimeout), though the agent answers health checks: "+
			"is it stuck (a disk that does not return, a handler that hangs) or overloaded? its logs and metrics say more", limit)
	}
	return err
}

// silent reports whether ep's agent leaves a gRPC health check on the
// client's connection unanswered for probeTimeout (or its connection is
// gone). An answer of any kind, an error included, means it runs.
func (ep *endpoint) silent(ctx context.Context) bool { return silentConn(ctx, ep.conn) }

// silentConn reports whether the agent at the other end of conn leaves a
// gRPC health check unanswered for probeTimeout (or the connection is
// gone). An answer of any kind, an error included, means it runs.
func silentConn(ctx context.Context, conn grpc.ClientConnInterface) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	code := status.Code(err)
	return code == codes.DeadlineExceeded || code == codes.Unavailable
}

// errWaitLimit ends a wait on an agent that passed its bound (guardWait).
var errWaitLimit = errors.New("the agent answered its health checks but not the wait within its bound")

// guardWait watches one wait on the agent at the other end of conn, such
// as a send or a receive on one of its streams: from endpointProbe into
// the wait, every endpointProbe, it asks the agent for a health check
// (silentConn). When one goes unanswered, or the wait passes limit (0:
// none), it calls cancel, which must end the wait. stop ends the watch
// and returns why it cancelled: errAgentSilent or errWaitLimit; nil when
// it did not.
func guardWait(conn grpc.ClientConnInterface, limit time.Duration, cancel func()) (stop func() error) {
	start := time.Now()
	next := func() time.Duration {
		if limit > 0 {
			return min(endpointProbe, max(limit-time.Since(start), 0))
		}
		return endpointProbe
	}
	return waitguard.Start(next, func() error {
		switch {
		case limit > 0 && time.Since(start) >= limit:
			return errWaitLimit
		case silentConn(context.Background(), conn):
			return errAgentSilent
		}
		return nil
	}, cancel)
}
