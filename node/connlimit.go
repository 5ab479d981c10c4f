package node

import (
	"log/slog"
	"time"

	"github.com/zrpcio/zrpc/internal/warnrate"
)

// connRefusalWarnEvery is how often, at most, the agent warns about one
// client IP's connections refused past max_conns_per_client; at most
// connRefusalHosts client IPs are remembered.
const (
	connRefusalWarnEvery = time.Minute
	connRefusalHosts     = 1024
)

// connRefusals counts and logs the connections internal/connlimit closed
// on one port (what names it: "gRPC", "HTTP"): a warning per client IP a
// minute at most, saying how many since the last, and count, if set, for
// every one.
type connRefusals struct {
	log   *slog.Logger
	what  string
	count func()
	warn  *warnrate.Limiter
}

func newConnRefusals(log *slog.Logger, what string, count func()) *connRefusals {
	return &connRefusals{log: log, what: what, count: count, warn: warnrate.New(connRefusalWarnEvery, connRefusalHosts, time.Now)}
}

func (r *connRefusals) refused(host string, limit int) {
	if r.count != nil {
		r.count()
	}
	if pass, held := r.warn.Seen(host); pass {
		r.log.Warn("closed "+r.what+" connections from a client that holds the most it may keep open; raise max_conns_per_client if it is a legitimate client",
			"client", host, "limit", limit, "refused", held+1)
	}
}
