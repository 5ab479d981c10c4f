// Package httpserve builds the HTTP servers zrpc listens with (an agent's
// metrics, UI and debug endpoint; a service's metrics endpoint), bounded in
// what a client may hold: the time to send its request headers, the time a
// connection may sit idle between requests, and the size of the headers.
// A stranger who opens connections and sends nothing, or headers without
// end, or asks and then reads nothing of the answer, costs a connection
// for seconds or minutes and 64 KiB, not one forever.
//
// There is no overall read or write timeout: a CPU profile or an execution
// trace (/debug/pprof) streams for as long as it was asked to run. What is
// bounded is each write of an answer, which a client that reads nothing
// blocks once the socket buffers are full.
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
	// WriteStall bounds one write (or flush) of an answer, and the
	// sending of what is left of it once the handler returns: a client
	// that stops reading holds a connection and its handler this long.
	WriteStall = 2 * time.Minute
)

// New returns a server for h with the bounds above. errorLog receives
// net/http's own errors (TLS handshakes, panics in handlers); nil uses
// the standard logger.
func New(h http.Handler, errorLog *log.Logger) *http.Server {
	return &http.Server{
		Handler:           boundWrites(h, WriteStall),
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          errorLog,
	}
}

// boundWrites runs h with each write and flush of its answer bounded by
// stall, and the rest of the answer, sent after h returns, too (net/http
// clears the deadline once it has sent the answer).
func boundWrites(h http.Handler, stall time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		g := &stallGuard{ResponseWriter: w, rc: rc, stall: stall}
		defer func() {
			g.stop()
			_ = rc.SetWriteDeadline(time.Now().Add(stall))
		}()
		h.ServeHTTP(g, r)
	})
}

// stallGuard is a ResponseWriter whose writes and flushes end in an error
// when one has not finished within stall: a timer started with each sets
// the connection's write deadline to now when it fires. Between writes
// no deadline is set, so an answer may take as long as its handler
// likes, and a handler's own deadlines (http.ResponseController reaches
// the connection through Unwrap) hold.
type stallGuard struct {
	http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
	timer *time.Timer // made by the first write
}

func (g *stallGuard) Write(p []byte) (int, error) {
	g.start()
	defer g.stop()
	return g.ResponseWriter.Write(p)
}

// FlushError is how http.ResponseController flushes a ResponseWriter.
func (g *stallGuard) FlushError() error {
	g.start()
	defer g.stop()
	return g.rc.Flush()
}

func (g *stallGuard) Flush() { _ = g.FlushError() }

func (g *stallGuard) Unwrap() http.ResponseWriter { return g.ResponseWriter }

func (g *stallGuard) start() {
	if g.timer == nil {
		g.timer = time.AfterFunc(g.stall, g.cut)
		return
	}
	g.timer.Reset(g.stall)
}

func (g *stallGuard) stop() {
	if g.timer != nil {
		g.timer.Stop()
	}
}

// cut ends the write that has not finished in time.
func (g *stallGuard) cut() { _ = g.rc.SetWriteDeadline(time.Now()) }
