package apierr

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// reasonOf returns the Reason of the zrpc ErrorInfo detail of a status error.
func reasonOf(t *testing.T, err error) string {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("%v is not a status error", err)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == domain {
			return info.GetReason()
		}
	}
	return ""
}

// statusWithReason builds what an agent sends: a status whose ErrorInfo
// carries reason.
func statusWithReason(t *testing.T, c codes.Code, msg, reason string) error {
	t.Helper()
	st, err := status.New(c, msg).WithDetails(&errdetails.ErrorInfo{Domain: domain, Reason: reason})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

// TestReasonCodesAreStableUpperSnake: every sentinel has one reason code,
// UPPER_SNAKE, used by no other sentinel and equal to no sentinel's text.
func TestReasonCodesAreStableUpperSnake(t *testing.T) {
	upperSnake := regexp.MustCompile(`^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$`)
	texts := make(map[string]bool)
	for _, e := range table {
		texts[e.err.Error()] = true
	}
	seen := make(map[string]error)
	for _, e := range table {
		if !upperSnake.MatchString(e.reason) {
			t.Errorf("%v: reason code %q is not UPPER_SNAKE", e.err, e.reason)
		}
		if other, ok := seen[e.reason]; ok {
			t.Errorf("%v and %v share the reason code %q", e.err, other, e.reason)
		}
		if texts[e.reason] {
			t.Errorf("reason code %q equals a sentinel's text", e.reason)
		}
		seen[e.reason] = e.err
	}
	// Codes are stable API: a few spelled out, so renaming one fails here.
	for err, want := range map[error]string{
		ErrNotFound:       "NOT_FOUND",
		ErrNotLeader:      "NOT_LEADER",
		ErrWatchTooSlow:   "WATCH_TOO_SLOW",
		ErrOutcomeUnknown: "OUTCOME_UNKNOWN",
	} {
		if got := Code(err); got != want {
			t.Errorf("Code(%v) = %q, want %q", err, got, want)
		}
	}
}

// TestToStatusCarriesReasonCode: the ErrorInfo of a sentinel's status holds
// its reason code, not its text.
func TestToStatusCarriesReasonCode(t *testing.T) {
	for _, e := range table {
		err := ToStatus(fmt.Errorf("%w: detail", e.err))
		if got := status.Code(err); got != e.status {
			t.Errorf("%v: status code %v, want %v", e.err, got, e.status)
		}
		if got := reasonOf(t, err); got != e.reason {
			t.Errorf("%v: ErrorInfo reason %q, want %q", e.err, got, e.reason)
		}
	}
}

// TestFromStatusMatchesReasonCode: a status carrying a reason code becomes
// an error wrapping that code's sentinel, whatever its message says.
func TestFromStatusMatchesReasonCode(t *testing.T) {
	for _, e := range table {
		err := FromStatus(statusWithReason(t, e.status, "some message", e.reason))
		if !errors.Is(err, e.err) {
			t.Errorf("reason %q: %v does not wrap %v", e.reason, err, e.err)
		}
		if err.Error() != "some message" {
			t.Errorf("reason %q: message %q, want the server's", e.reason, err.Error())
		}
		if got := Code(err); got != e.reason {
			t.Errorf("Code of the received %v = %q, want %q", e.err, got, e.reason)
		}
	}
}

// TestFromStatusAcceptsTextReasons: agents before reason codes put the
// sentinel's text in the ErrorInfo; their errors are still recognised.
func TestFromStatusAcceptsTextReasons(t *testing.T) {
	for _, e := range table {
		err := FromStatus(statusWithReason(t, e.status, e.err.Error()+": x", e.err.Error()))
		if !errors.Is(err, e.err) {
			t.Errorf("text reason %q: %v does not wrap %v", e.err.Error(), err, e.err)
		}
	}
}

// TestFromStatusUnknownReason: a status with a reason zrpc does not know,
// or another domain's ErrorInfo, or none, comes back unchanged.
func TestFromStatusUnknownReason(t *testing.T) {
	other, err := status.New(codes.NotFound, "x").WithDetails(&errdetails.ErrorInfo{Domain: "example.com", Reason: "NOT_FOUND"})
	if err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string]error{
		"unknown reason": statusWithReason(t, codes.NotFound, "x", "NO_SUCH_REASON"),
		"other domain":   other.Err(),
		"no detail":      status.Error(codes.NotFound, "not found"),
	} {
		got := FromStatus(in)
		if got != in {
			t.Errorf("%s: FromStatus returned %v, want the error unchanged", name, got)
		}
		for _, e := range table {
			if errors.Is(got, e.err) {
				t.Errorf("%s: %v wraps %v", name, got, e.err)
			}
		}
	}
}

// TestFromCodeRebuildsSentinel: FromCode rebuilds the sentinel from its
// reason code or from the text stored before codes, with the message kept
// and the status ready to be sent on (code and reason code).
func TestFromCodeRebuildsSentinel(t *testing.T) {
	for _, e := range table {
		for _, stored := range []string{e.reason, e.err.Error()} {
			err := FromCode(stored, "stored message")
			if !errors.Is(err, e.err) || err.Error() != "stored message" {
				t.Errorf("FromCode(%q) = %v, want %v with the stored message", stored, err, e.err)
			}
			sent := ToStatus(err)
			if status.Code(sent) != e.status || reasonOf(t, sent) != e.reason {
				t.Errorf("FromCode(%q) sent as %v with reason %q, want %v with %q",
					stored, status.Code(sent), reasonOf(t, sent), e.status, e.reason)
			}
		}
	}
	if err := FromCode("NO_SUCH_REASON", "msg"); err.Error() != "msg" || Code(err) != "" {
		t.Errorf("FromCode of an unknown code = %v (code %q), want a plain error", err, Code(err))
	}
}

// TestToStatusOtherErrors: errors outside the table keep their own codes.
func TestToStatusOtherErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("wait: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("wait: %w", context.Canceled), codes.Canceled},
		{errors.New("boom"), codes.Internal},
		{status.Error(codes.PermissionDenied, "no"), codes.PermissionDenied},
	} {
		if got := status.Code(ToStatus(tc.err)); got != tc.want {
			t.Errorf("ToStatus(%v): %v, want %v", tc.err, got, tc.want)
		}
	}
	if ToStatus(nil) != nil || FromStatus(nil) != nil {
		t.Error("nil is not kept nil")
	}
}
