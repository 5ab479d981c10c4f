package apierr

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

func withReason(st *status.Status, reason string) error {
	d, err := st.WithDetails(&errdetails.ErrorInfo{Domain: domain, Reason: reason})
	if err != nil {
		return st.Err()
	}
	return d.Err()
}
