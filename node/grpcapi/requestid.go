package grpcapi

import (
	"context"

	"github.com/zrpcio/zrpc/api/apierr"
)

// maxClientRequestIDLen bounds a client's request id.
const maxClientRequestIDLen = 64

// clientRequestID turns the request_id a client sent with a write into the
// Command.request_id the agent proposes. The id is prefixed with "client/"
// and the write's kind: agents mint "<agent>-<hex>" ids and agent names
// contain no '/', so a client's id never matches an agent's, nor one it
// sent with a write of another kind. Clients mint 128 random bits per call,
// so two clients' ids do not meet either. An empty id gives "" (the agent
// mints one).
func clientRequestID(kind, id string) (string, error) {
	if id == "" {
		return "", nil
	}
	if len(id) > maxClientRequestIDLen {
		return "", apierr.Invalid("request_id", "is %d bytes, the limit is %d", len(id), maxClientRequestIDLen)
	}
	if !requestIDChars(id) {
		return "", apierr.Invalid("request_id", "%q may contain only letters, digits, '.', '_', ':' and '-'", id)
	}
	return "client/" + kind + "/" + id, nil
}

// requestIDChars reports whether id holds only letters, digits, '.',
// '_', ':' and '-' (ASCII). Every write is checked: a loop over the
// bytes, not a regular expression (2 % of a single agent's CPU under
// load).
func requestIDChars(id string) bool {
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

type requestIDKey struct{}

// WithRequestID returns ctx carrying the request id that the write served
// under it proposes (Cluster.Propose takes it with RequestIDFrom): a handler whose write is proposed by
// another package (the blob store's delete) passes the client's id this
// way. Only handlers that propose exactly one command may use it.
func WithRequestID(ctx context.Context, kind, id string) (context.Context, error) {
	rid, err := clientRequestID(kind, id)
	if err != nil || rid == "" {
		return ctx, err
	}
	return context.WithValue(ctx, requestIDKey{}, rid), nil
}

// RequestIDFrom returns the request id ctx carries (WithRequestID), or "".
func RequestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
