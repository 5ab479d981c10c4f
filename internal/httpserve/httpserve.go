// Package httpserve builds the HTTP servers zrpc listens with (an agent's
// metrics, UI and debug endpoint; a service's metrics endpoint), bounded in
// what a client may hold: the time to send its request headers, the time a
// connection may sit idle between requests, and the size of the headers.
// A stranger who opens connections and sends nothing, or headers without
// end, costs a connection for seconds and 64 KiB, not one forever.
//
// There is no overall read or write timeout: a CPU profile or an execution
// trace (/debug/pprof) streams for as long as it was asked to run.
package httpserve

import (
	"log"
	"net/http"
	"time"
)

// The bounds of every server New returns.
const (
	// ReadHeaderTimeout bounds the time from a request's first byte (or
	// a new connection) to the end of its headers.
	ReadHeaderTimeout = 10 * time.Second
	// IdleTimeout closes a kept-alive connection that sends no next
	// request for this long. Prometheus scrapes every 15 s to 1 min by
	// default and reconnects at no cost when closed.
	IdleTimeout = 2 * time.Minute
	// MaxHeaderBytes bounds a request's headers; larger ones are answered
	// 431 Request Header Fields Too Large.
	MaxHeaderBytes = 64 << 10
)

// New returns a server for h with the bounds above. errorLog receives
// net/http's own errors (TLS handshakes, panics in handlers); nil uses
// the standard logger.
func New(h http.Handler, errorLog *log.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          errorLog,
	}
}
