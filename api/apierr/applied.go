package apierr

import (
	"errors"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// A write that failed may still be applied (its proposal committed after
// the leader stopped answering, a forwarded request that reached the
// leader before the connection broke), so a failed write's outcome is in
// general unknown. Some failures are certain: the agent proposed nothing
// and sent nothing on (it knew no leader, or was cut off from it, and
// never forwarded). NotApplied marks those, and the mark crosses the wire
// in the ErrorInfo's metadata ("applied": "false"), so a client may send
// the write again as it is, or report it failed for certain.

// appliedKey is the ErrorInfo metadata key of the mark.
const appliedKey = "applied"

// notApplied is a failed write that was certainly not applied.
type notApplied struct{ err error }

// notAppliedText ends the message of a marked error.
const notAppliedText = "; the write was not applied"

// Error says it once, also of an error whose text, from an agent, says it
// already.
func (e *notApplied) Error() string {
	msg := e.err.Error()
	if strings.HasSuffix(msg, notAppliedText) {
		return msg
	}
	return msg + notAppliedText
}
func (e *notApplied) Unwrap() error { return e.err }

// maybeApplied clears the mark of an error it wraps: a write one attempt
// of which may have been applied, whatever the last attempt said.
type maybeApplied struct{ err error }

func (e *maybeApplied) Error() string { return e.err.Error() }
func (e *maybeApplied) Unwrap() error { return e.err }

// NotApplied marks err, a write's failure, as certain: the write was not
// applied.
func NotApplied(err error) error {
	if err == nil || IsNotApplied(err) {
		return err
	}
	return &notApplied{err: err}
}

// MaybeApplied clears err's NotApplied mark, for a write an earlier
// attempt of which may have been applied.
func MaybeApplied(err error) error {
	if !IsNotApplied(err) {
		return err
	}
	return &maybeApplied{err: err}
}

// IsNotApplied reports whether err says its write was certainly not
// applied (NotApplied, here or on the agent that answered).
func IsNotApplied(err error) bool {
	for err != nil {
		switch e := err.(type) {
		case *notApplied:
			return true
		case *maybeApplied:
			return false
		case *Error:
			return e.notApplied
		}
		err = errors.Unwrap(err)
	}
	return false
}

// markStatus returns st with the mark in its ErrorInfo (one added if it
// has none).
func markStatus(st *status.Status) *status.Status {
	out := status.New(st.Code(), st.Message())
	var details []protoadapt.MessageV1
	marked := false
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == domain && !marked {
			info = proto.Clone(info).(*errdetails.ErrorInfo)
			if info.Metadata == nil {
				info.Metadata = map[string]string{}
			}
			info.Metadata[appliedKey] = "false"
			d, marked = info, true
		}
		if m, ok := d.(protoadapt.MessageV1); ok {
			details = append(details, m)
		}
	}
	if !marked {
		details = append(details, &errdetails.ErrorInfo{Domain: domain, Metadata: map[string]string{appliedKey: "false"}})
	}
	if withDetails, err := out.WithDetails(details...); err == nil {
		return withDetails
	}
	return st
}

// notAppliedIn reports whether st's ErrorInfo carries the mark.
func notAppliedIn(st *status.Status) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == domain && info.GetMetadata()[appliedKey] == "false" {
			return true
		}
	}
	return false
}
