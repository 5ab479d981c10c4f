// Package apierr defines the errors that cross the agent's gRPC API and the
// one table that maps them to status codes and back, so that errors.Is works
// on both sides of the wire. Server packages re-export these sentinels
// (raftstore.ErrNotLeader is apierr.ErrNotLeader); clients compare against
// them directly.
//
// Each sentinel has a reason code (NOT_FOUND, NOT_LEADER, ...) declared once
// in the table. The code is what identifies the sentinel wherever it leaves
// the process: the Reason of the status's ErrorInfo detail, and the request
// results kept in the registry's snapshots. Codes are stable API; the
// sentinels' texts and the messages wrapping them are for people and may
// change. Releases before codes wrote the sentinel's text in their place, so
// FromStatus and FromCode also accept those texts.
package apierr

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors. Each has exactly one gRPC code in the table below.
var (
	ErrInvalidArgument = errors.New("invalid argument")
	ErrNotFound        = errors.New("not found")
	ErrNoLeader        = errors.New("no cluster leader")
	ErrNotLeader       = errors.New("not the leader")
	ErrStaleRead       = errors.New("replica is stale")
	ErrShuttingDown    = errors.New("agent is shutting down")
	ErrSessionRequired = errors.New("session not open")
	ErrAlreadyExists   = errors.New("already exists")
	ErrTooLarge        = errors.New("request too large")
	// ErrNotEnoughShards: too few agents are alive, or too few shards of a
	// block could be stored or read.
	ErrNotEnoughShards = errors.New("not enough shards")
	// ErrCorrupt: stored bytes failed their checksum.
	ErrCorrupt = errors.New("data corrupt")
	// ErrNoSpace: an agent's shard store is full.
	ErrNoSpace = errors.New("no space for shards")
	// ErrDiskFull: the leader could not store a write in its Raft log for
	// lack of disk space; the write was not applied.
	ErrDiskFull = errors.New("disk full")
	// ErrQuotaExceeded: a write would pass one of the registry's limits;
	// the message names the limit and the flag that sets it.
	ErrQuotaExceeded = errors.New("quota exceeded")
	// ErrFailedPrecondition: the request is well-formed but the cluster's
	// state does not allow it (the message says which state).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrOutcomeUnknown: a write was proposed but whether it was applied
	// could not be learned (no answer from the leader in time, or the
	// caller went away after sending everything); reading the state back
	// (e.g. `zrpcctl blob stat`) tells.
	ErrOutcomeUnknown = errors.New("outcome unknown")
	// ErrPageExpired: the service changed between two pages of a Get; the
	// Get must start over from the first page.
	ErrPageExpired = errors.New("page token expired")
	// ErrWatchTooSlow: a watcher fell too far behind and its stream was
	// ended; a new watch resumes from the revision the status names.
	ErrWatchTooSlow = errors.New("watch too slow")
	// ErrUnauthenticated: ACLs are on and the call carries no token, or
	// one the cluster does not know.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: the call's token lacks a permission the call
	// needs; the message names it.
	ErrPermissionDenied = errors.New("permission denied")
)

// entry ties one sentinel to its gRPC status code and to its reason code,
// which the client reads to recover the sentinel.
type entry struct {
	err    error
	status codes.Code
	reason string
}

var table = []entry{
	{ErrInvalidArgument, codes.InvalidArgument, "INVALID_ARGUMENT"},
	{ErrNotFound, codes.NotFound, "NOT_FOUND"},
	{ErrNoLeader, codes.Unavailable, "NO_LEADER"},
	{ErrNotLeader, codes.Unavailable, "NOT_LEADER"},
	{ErrStaleRead, codes.Unavailable, "STALE_READ"},
	{ErrShuttingDown, codes.Unavailable, "SHUTTING_DOWN"},
	{ErrSessionRequired, codes.FailedPrecondition, "SESSION_REQUIRED"},
	{ErrAlreadyExists, codes.AlreadyExists, "ALREADY_EXISTS"},
	{ErrTooLarge, codes.ResourceExhausted, "TOO_LARGE"},
	{ErrNotEnoughShards, codes.FailedPrecondition, "NOT_ENOUGH_SHARDS"},
	{ErrCorrupt, codes.DataLoss, "CORRUPT"},
	{ErrNoSpace, codes.ResourceExhausted, "NO_SPACE"},
	{ErrDiskFull, codes.ResourceExhausted, "DISK_FULL"},
	{ErrQuotaExceeded, codes.ResourceExhausted, "QUOTA_EXCEEDED"},
	{ErrFailedPrecondition, codes.FailedPrecondition, "FAILED_PRECONDITION"},
	{ErrOutcomeUnknown, codes.Unknown, "OUTCOME_UNKNOWN"},
	{ErrPageExpired, codes.Aborted, "PAGE_EXPIRED"},
	{ErrWatchTooSlow, codes.Aborted, "WATCH_TOO_SLOW"},
	{ErrUnauthenticated, codes.Unauthenticated, "UNAUTHENTICATED"},
	{ErrPermissionDenied, codes.PermissionDenied, "PERMISSION_DENIED"},
}

// byReason finds an entry by its reason code or, for what earlier releases
// wrote, by its sentinel's text.
var byReason = func() map[string]entry {
	m := make(map[string]entry, 2*len(table))
	for _, e := range table {
		m[e.reason] = e
		m[e.err.Error()] = e
	}
	return m
}()

// domain is the Domain of the ErrorInfo detail carrying the reason code.
const domain = "zrpc.io"

// ToStatus converts err to a gRPC status error. Known sentinels (possibly
// wrapped) get their status code and an ErrorInfo carrying their reason
// code; context errors become Canceled/DeadlineExceeded; status errors pass
// through; anything else is Internal.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		if IsNotApplied(err) && !notAppliedIn(st) {
			return markStatus(st).Err()
		}
		return err
	}
	for _, e := range table {
		if errors.Is(err, e.err) {
			return e.statusMarked(err.Error(), IsNotApplied(err)).Err()
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// FromStatus converts a gRPC error back into an error that wraps the matching
// sentinel (errors.Is works) and keeps the server's message. The sentinel is
// found by the reason code of the status's ErrorInfo, or by the sentinel's
// text that agents before reason codes put there. Errors without a known
// reason are returned unchanged.
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	for _, d := range st.Details() {
		info, ok := d.(interface {
			GetDomain() string
			GetReason() string
		})
		if !ok || info.GetDomain() != domain {
			continue
		}
		if e, ok := byReason[info.GetReason()]; ok {
			return &Error{sentinel: e.err, st: st, notApplied: notAppliedIn(st)}
		}
	}
	return err
}

// Error is a sentinel carried across the wire with the server's status.
type Error struct {
	sentinel   error
	st         *status.Status
	notApplied bool // the status carries the NotApplied mark
}

func (e *Error) Error() string { return e.st.Message() }

// Unwrap returns the sentinel, for errors.Is.
func (e *Error) Unwrap() error { return e.sentinel }

// GRPCStatus returns the status as received, details included, so that an
// agent forwarding it passes the sentinel on intact.
func (e *Error) GRPCStatus() *status.Status { return e.st }

// Invalid returns an InvalidArgument error naming the field.
func Invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidArgument, field, fmt.Sprintf(format, args...))
}

// Code returns the reason code of the sentinel err wraps (e.g. "NOT_FOUND"),
// or "" when none.
func Code(err error) string {
	for _, e := range table {
		if errors.Is(err, e.err) {
			return e.reason
		}
	}
	return ""
}

// FromCode rebuilds an error with message msg wrapping the sentinel whose
// reason code is code (as returned by Code); code may also be the sentinel's
// text, which releases before reason codes stored in its place. An unknown
// code gives a plain error.
func FromCode(code, msg string) error {
	e, ok := byReason[code]
	if !ok {
		return errors.New(msg)
	}
	return &Error{sentinel: e.err, st: e.statusWith(msg)}
}

// statusWith returns the status of e's sentinel with message msg: its
// status code and an ErrorInfo carrying its reason code.
func (e entry) statusWith(msg string) *status.Status { return e.statusMarked(msg, false) }

// statusMarked is statusWith, the ErrorInfo also carrying the NotApplied
// mark when notApplied.
func (e entry) statusMarked(msg string, notApplied bool) *status.Status {
	st := status.New(e.status, msg)
	info := &errdetails.ErrorInfo{Domain: domain, Reason: e.reason}
	if notApplied {
		info.Metadata = map[string]string{appliedKey: "false"}
	}
	d, err := st.WithDetails(info)
	if err != nil {
		return st
	}
	return d
}
