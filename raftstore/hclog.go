package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter sends raft's hclog output to a slog.Logger, so the agent has
// one log stream with one format and one level setting. Repeated warnings
// and errors about one peer are collapsed (peerNoise), and a peer hanging
// up in the middle of a message is not an error.
type hclogAdapter struct {
	l     *slog.Logger
	name  string
	args  []any
	noise *peerNoise // shared by the loggers made from one NewHCLog
}

// NewHCLog returns an hclog.Logger that writes to l.
func NewHCLog(l *slog.Logger, name string) hclog.Logger {
	return &hclogAdapter{l: l, name: name, noise: newPeerNoise(time.Now)}
}

// decodeFailed is what raft's transport logs when it cannot read a
// command from a connection.
const decodeFailed = "failed to decode incoming command"

func (a *hclogAdapter) log(level slog.Level, msg string, args ...any) {
	if level > slog.LevelInfo && msg == decodeFailed {
		// A peer that died or closed its connection mid-message, or
		// bytes that are no Raft command: the stream's guard warns of
		// the latter, naming the sender (transport_guard.go).
		level = slog.LevelDebug
	}
	// Lines at INFO and above are judged even when not written: they count
	// election rounds and say a peer answers again (peerNoise).
	if level < slog.LevelInfo && !a.l.Enabled(context.Background(), level) {
		return
	}
	all := make([]any, 0, len(a.args)+len(args)+2)
	if a.name != "" {
		all = append(all, "component", a.name)
	}
	all = append(all, a.args...)
	all = append(all, args...)
	for i, v := range all {
		if f, ok := v.(hclog.Format); ok && len(f) > 0 {
			if format, ok := f[0].(string); ok {
				all[i] = fmt.Sprintf(format, f[1:]...)
			}
		}
	}
	all = a.noise.withPeerIDs(all)
	pass, extra := a.noise.filter(level, a.name, msg, all)
	for _, l := range extra {
		a.l.Log(context.Background(), l.level, l.msg, l.args...)
	}
	if pass {
		a.l.Log(context.Background(), level, msg, all...)
	}
}

// hungUp reports whether args carry an error that says the other end went
// away: the connection ended or was reset, not a malformed message. Raft's
// msgpack decoder wraps the read error with Cause, not Unwrap.
func hungUp(args []any) bool {
	for _, v := range args {
		if err, ok := v.(error); ok {
			for range 8 { // a bounded walk down the causes
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
					errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
					return true
				}
				var c interface{ Cause() error }
				if !errors.As(err, &c) || c.Cause() == nil || c.Cause() == err {
					return false
				}
				err = c.Cause()
			}
			return false
		}
	}
	return false
}

func toSlog(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Info, hclog.NoLevel, hclog.DefaultLevel:
		return slog.LevelInfo
	case hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	a.log(toSlog(level), msg, args...)
}
func (a *hclogAdapter) Trace(msg string, args ...any) { a.log(slog.LevelDebug-4, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.log(slog.LevelDebug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.log(slog.LevelInfo, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.log(slog.LevelWarn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.log(slog.LevelError, msg, args...) }

func (a *hclogAdapter) enabled(l slog.Level) bool { return a.l.Enabled(context.Background(), l) }
func (a *hclogAdapter) IsTrace() bool             { return a.enabled(slog.LevelDebug - 4) }
func (a *hclogAdapter) IsDebug() bool             { return a.enabled(slog.LevelDebug) }
func (a *hclogAdapter) IsInfo() bool              { return a.enabled(slog.LevelInfo) }
func (a *hclogAdapter) IsWarn() bool              { return a.enabled(slog.LevelWarn) }
func (a *hclogAdapter) IsError() bool             { return a.enabled(slog.LevelError) }

func (a *hclogAdapter) ImpliedArgs() []any { return a.args }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.args = append(append([]any{}, a.args...), args...)
	return &c
}

func (a *hclogAdapter) Name() string { return a.name }

func (a *hclogAdapter) Named(name string) hclog.Logger {
	c := *a
	if c.name != "" {
		name = c.name + "." + name
	}
	c.name = name
	return &c
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.name = name
	return &c
}

// SetLevel is ignored: the slog handler owns the level.
func (a *hclogAdapter) SetLevel(hclog.Level) {}

func (a *hclogAdapter) GetLevel() hclog.Level {
	switch {
	case a.IsDebug():
		return hclog.Debug
	case a.IsInfo():
		return hclog.Info
	case a.IsWarn():
		return hclog.Warn
	default:
		return hclog.Error
	}
}

func (a *hclogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(a.l.Handler(), slog.LevelInfo)
}

func (a *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		a.Info(string(bytes.TrimRight(p, "\n")))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }
