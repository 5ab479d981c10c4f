// Package testlog sends slog output to a test's log, so that a failing test
// shows what its agents logged and a passing one stays quiet.
package testlog

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// New returns a logger writing to t.Log at debug level and above; prefix
// names the source (an agent name) on every line. Lines logged after the
// test ends are dropped instead of panicking.
// Benchmarks get a discarding logger: their output is the measurements.
func New(t testing.TB, prefix string) *slog.Logger {
	if _, ok := t.(*testing.B); ok {
		return Discard()
	}
	w := &tbWriter{t: t, prefix: prefix}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct {
	mu     sync.Mutex
	t      testing.TB
	prefix string
	done   bool
}

func (w *tbWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

func (w *tbWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	line := strings.TrimSuffix(string(bytes.TrimSpace(p)), "\n")
	if w.prefix != "" {
		line = "[" + w.prefix + "] " + line
	}
	w.t.Log(line)
	return len(p), nil
}

// Discard is a logger that drops everything (benchmarks).
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Buffer collects output that one goroutine (a logger, a running command or
// process) writes while the test reads it. The zero Buffer is ready to use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
