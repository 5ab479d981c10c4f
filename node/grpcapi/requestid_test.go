package grpcapi

import (
	"errors"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/api/apierr"
)

func TestClientRequestIDAcceptsOnlyItsCharacters(t *testing.T) {
	const allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-"
	for c := 0; c < 256; c++ {
		id := "ab" + string([]byte{byte(c)}) + "9"
		got, err := clientRequestID("register", id)
		if strings.IndexByte(allowed, byte(c)) >= 0 {
			if err != nil || got != "client/register/"+id {
				t.Errorf("clientRequestID(%q) = %q, %v; want client/register/%s", id, got, err, id)
			}
			continue
		}
		if !errors.Is(err, apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), "request_id") {
			t.Errorf("clientRequestID(%q) = %q, %v; want InvalidArgument naming request_id", id, got, err)
		}
	}
	for _, id := range []string{"é", "ok\x00", strings.Repeat("a", maxClientRequestIDLen+1)} {
		if _, err := clientRequestID("register", id); !errors.Is(err, apierr.ErrInvalidArgument) {
			t.Errorf("clientRequestID(%q) = %v, want InvalidArgument", id, err)
		}
	}
	if got, err := clientRequestID("register", strings.Repeat("a", maxClientRequestIDLen)); err != nil || got == "" {
		t.Errorf("clientRequestID of %d bytes = %q, %v; want it accepted", maxClientRequestIDLen, got, err)
	}
	if got, err := clientRequestID("register", ""); err != nil || got != "" {
		t.Errorf(`clientRequestID("") = %q, %v; want "", nil (the agent mints one)`, got, err)
	}
}
