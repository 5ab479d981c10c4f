package node

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
)

// The agent keeps its recent log lines in memory, so that `zrpcctl debug`
// can collect them from an agent whose output went to a terminal or a
// journal the operator cannot reach: /debug/zrpc/logs (operator:read with
// ACLs on). The ring holds at most logRingLines lines and logRingBytes
// bytes, oldest dropped first. Log lines never carry secrets (keys are
// logged by fingerprint).
const (
	logRingLines = 2000
	logRingBytes = 1 << 20
)

// logRing is the ring of recent log lines, in text format.
type logRing struct {
	mu    sync.Mutex
	lines [][]byte // oldest first
	bytes int
}

// Write keeps one formatted record: slog's TextHandler writes each record
// with one call.
func (r *logRing) Write(p []byte) (int, error) {
	line := append([]byte(nil), p...)
	if len(line) > logRingBytes {
		line = line[:logRingBytes]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	r.bytes += len(line)
	drop := 0
	for len(r.lines)-drop > logRingLines || r.bytes > logRingBytes {
		r.bytes -= len(r.lines[drop])
		drop++
	}
	if drop > 0 {
		r.lines = append(r.lines[:0], r.lines[drop:]...)
	}
	return len(p), nil
}

// serve writes the lines kept, oldest first.
func (r *logRing) serve(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	lines := append([][]byte(nil), r.lines...)
	r.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	for _, l := range lines {
		w.Write(l)
	}
}

// handler returns a slog handler that passes records to next and keeps
// those of level INFO and above (and any next takes) in the ring.
func (r *logRing) handler(next slog.Handler) slog.Handler {
	return &teeHandler{next: next, ring: slog.NewTextHandler(r, &slog.HandlerOptions{Level: slog.LevelDebug})}
}

// teeHandler sends records to the agent's handler and to the ring.
type teeHandler struct {
	next, ring slog.Handler
}

func (h *teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h *teeHandler) Handle(ctx context.Context, rec slog.Record) error {
	h.ring.Handle(ctx, rec) // the ring's writer never fails
	if h.next.Enabled(ctx, rec.Level) {
		return h.next.Handle(ctx, rec)
	}
	return nil
}

func (h *teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &teeHandler{next: h.next.WithAttrs(as), ring: h.ring.WithAttrs(as)}
}

func (h *teeHandler) WithGroup(name string) slog.Handler {
	return &teeHandler{next: h.next.WithGroup(name), ring: h.ring.WithGroup(name)}
}
