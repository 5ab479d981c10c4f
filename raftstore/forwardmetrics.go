package raftstore

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/internal/warnrate"
)

// ForwardFailure is why a call this agent ran on the leader failed
// without the leader's answer (zrpc_forward_failures_total's reason). A
// call the leader answered with an error of the API (not found, a
// conflict, a quota) is the leader's answer, not a failure of
// forwarding; nor is a call its caller cancelled, or one that ended with
// the agent's shutdown.
type ForwardFailure int

const (
	// ForwardNoLeader: no leader was known (an election, too few voters
	// reachable, this agent cut off from the leader, or the leader's
	// gRPC address not known yet), or it moved for the whole wait.
	ForwardNoLeader ForwardFailure = iota
	// ForwardUnreachable: the leader was known but its gRPC API could
	// not be reached (connection refused or broken).
	ForwardUnreachable
	// ForwardDeadline: the leader took the call and did not answer before
	// leader_wait or the caller's deadline.
	ForwardDeadline
	// ForwardRefused: the leader's gRPC server refused the call itself,
	// not with an answer of zrpc's API: not an agent of its cluster
	// (PermissionDenied, Unauthenticated), a method it does not serve
	// (Unimplemented), a message past gRPC's limits (ResourceExhausted),
	// or an internal error.
	ForwardRefused

	numForwardFailures
)

// ForwardFailures lists every ForwardFailure, in order.
var ForwardFailures = []ForwardFailure{ForwardNoLeader, ForwardUnreachable, ForwardDeadline, ForwardRefused}

func (r ForwardFailure) String() string {
	switch r {
	case ForwardNoLeader:
		return "no_leader"
	case ForwardUnreachable:
		return "unreachable"
	case ForwardDeadline:
		return "deadline"
	case ForwardRefused:
		return "refused"
	}
	return "unknown"
}

// forwardWarnEvery is how often, at most, the agent warns about the
// forwarding failures of one reason; the warning counts those in between.
const forwardWarnEvery = time.Minute

// forwardFailures counts a Forwarder's failures by reason and warns of
// them, once a forwardWarnEvery per reason at most.
type forwardFailures struct {
	counts [numForwardFailures]atomic.Uint64
	warn   *warnrate.Limiter
}

func newForwardFailures() *forwardFailures {
	return &forwardFailures{warn: warnrate.New(forwardWarnEvery, int(numForwardFailures), time.Now)}
}

// leaderSilent marks the ErrNoLeader of a call the leader took and did
// not answer in time.
type leaderSilent struct{ error }

func (e leaderSilent) Unwrap() error { return e.error }

// refusedCodes are the codes a leader's gRPC server answers, without a
// reason code of zrpc's API, when it refuses a call itself.
var refusedCodes = map[codes.Code]bool{
	codes.PermissionDenied: true, codes.Unauthenticated: true, codes.Unimplemented: true,
	codes.ResourceExhausted: true, codes.Internal: true,
}

// attemptFailure is why one attempt of a call on the leader failed with
// err, and false when err is no failure of forwarding: the attempt ran
// the call locally (this store led) or asked the leader (asked) or
// neither (no leader's connection).
func attemptFailure(err error, local, asked bool) (ForwardFailure, bool) {
	var silent leaderSilent
	switch {
	case err == nil, errors.Is(err, ErrShuttingDown):
		return 0, false
	case errors.Is(err, ErrNotLeader), errors.Is(err, errLeaderMoved):
		return ForwardNoLeader, true
	case local:
		return ForwardNoLeader, errors.Is(err, ErrNoLeader)
	case !asked:
		// No connection to a leader: none known, or dialling it failed.
		if errors.Is(err, ErrNoLeader) {
			return ForwardNoLeader, true
		}
		return ForwardUnreachable, !errors.Is(err, context.Canceled)
	case errors.As(err, &silent), deadlineExceeded(err):
		return ForwardDeadline, true
	case apierr.Code(err) != "":
		// The leader's answer, or an agent's that no longer leads.
		return ForwardNoLeader, errors.Is(err, ErrNoLeader)
	}
	code := status.Code(err)
	switch {
	case code == codes.Unavailable:
		return ForwardUnreachable, true
	case refusedCodes[code]:
		return ForwardRefused, true
	}
	return 0, false
}

// Failures returns how many calls this Forwarder ran on the leader have
// failed, by reason, since it was made.
func (f *Forwarder) Failures() map[ForwardFailure]uint64 {
	out := make(map[ForwardFailure]uint64, len(ForwardFailures))
	for _, r := range ForwardFailures {
		out[r] = f.failures.counts[r].Load()
	}
	return out
}

// noteFailure counts a call that failed for reason, and warns of it
// naming leader ("<id> at <address>", or "" when the call asked none),
// once a forwardWarnEvery per reason at most.
func (f *Forwarder) noteFailure(reason ForwardFailure, leader string, err error) {
	f.failures.counts[reason].Add(1)
	pass, held := f.failures.warn.Seen(reason.String())
	if !pass {
		return
	}
	if leader == "" {
		leader = "none known"
		if _, id := f.store.Leader(); id != "" {
			leader = id
		}
	}
	f.store.log.Warn("a call this agent forwards to the leader failed; see the error, and zrpc_forward_failures_total for how often",
		"reason", reason.String(), "leader", leader, "err", err, "failed", held+1)
}
