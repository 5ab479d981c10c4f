package client

import (
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// retryable reports whether a failed unary call may go to another agent:
// the agent is unreachable, shutting down, or cannot serve the request
// (codes.Unavailable). Answers about the request itself (NotFound,
// InvalidArgument, ...) are final.
func retryable(err error) bool {
	return status.Code(err) == codes.Unavailable
}

// resumable reports whether a broken watch stream should be reopened: the
// agent went away (Unavailable), ended the stream without an error (EOF), or
// ended it because the reader fell too far behind (ErrWatchTooSlow).
func resumable(err error) bool {
	return errors.Is(err, io.EOF) || status.Code(err) == codes.Unavailable || watchTooSlow(err)
}

// watchTooSlow reports whether err is an agent ending a watch whose reader
// fell behind; the stream's last revision received is where to resume.
func watchTooSlow(err error) bool {
	return errors.Is(mapErr(err), apierr.ErrWatchTooSlow)
}

// mapErr turns an error from an RPC into one that wraps its apierr sentinel.
func mapErr(err error) error {
	return apierr.FromStatus(err)
}

// codeSentinels maps a bare status code to the sentinel it most likely
// carries: the guess for a SessionResponse error from an agent that does
// not send reason codes yet.
var codeSentinels = map[codes.Code]error{
	codes.NotFound:           apierr.ErrNotFound,
	codes.InvalidArgument:    apierr.ErrInvalidArgument,
	codes.FailedPrecondition: apierr.ErrSessionRequired,
	codes.Unavailable:        apierr.ErrNoLeader,
	codes.AlreadyExists:      apierr.ErrAlreadyExists,
	codes.ResourceExhausted:  apierr.ErrTooLarge,
}

// fromDetail converts the error of a SessionResponse: by its reason code
// when it has one (apierr's table), else by its status code; the message
// is kept as the error text. Codes without a sentinel become status errors.
func fromDetail(d *zrpcpb.ErrorDetail) error {
	if d == nil {
		return nil
	}
	if d.GetReason() != "" {
		if err := apierr.FromCode(d.GetReason(), d.GetMessage()); apierr.Code(err) != "" {
			return err
		}
	}
	st := status.New(codes.Code(d.GetCode()), d.GetMessage())
	sentinel, ok := codeSentinels[st.Code()]
	if !ok {
		return st.Err()
	}
	return &detailError{sentinel: sentinel, st: st}
}

// detailError is a sentinel recovered from a status code and message.
type detailError struct {
	sentinel error
	st       *status.Status
}

func (e *detailError) Error() string { return e.st.Message() }

// Unwrap returns the sentinel, for errors.Is.
func (e *detailError) Unwrap() error { return e.sentinel }

// GRPCStatus lets status.Code see the agent's code.
func (e *detailError) GRPCStatus() *status.Status { return e.st }
