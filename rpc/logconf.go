package rpc

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// LogConfig builds the logger a Server uses when none is passed with
// WithServerLogger, like go-zero's Log section. Empty, the server logs
// nothing.
type LogConfig struct {
	// Level is debug, info (default), warn or error.
	Level string `yaml:"Level"`
	// Format is text (default, slog's key=value) or json.
	Format string `yaml:"Format"`
	// Output is stderr (default), stdout or the path of a file, which is
	// appended to (created with mode 0600).
	Output string `yaml:"Output"`
}

// Enabled reports whether the section is set (any field).
func (c LogConfig) Enabled() bool { return c != LogConfig{} }

func (c LogConfig) level() (slog.Level, error) {
	var l slog.Level
	switch strings.ToLower(c.Level) {
	case "", "info":
		l = slog.LevelInfo
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		return l, fmt.Errorf("setting Log.Level: %q is not debug, info, warn or error", c.Level)
	}
	return l, nil
}

func (c LogConfig) validate() error {
	var errs []error
	if _, err := c.level(); err != nil {
		errs = append(errs, err)
	}
	switch c.Format {
	case "", "text", "json":
	default:
		errs = append(errs, fmt.Errorf("setting Log.Format: %q is not text or json", c.Format))
	}
	return errors.Join(errs...)
}

// NewLogger opens the output and returns the logger and what closes the
// output (a no-op for stdout and stderr). Close it after the last log
// line; a Server built from the section closes it when it stops.
func (c LogConfig) NewLogger() (*slog.Logger, io.Closer, error) {
	if err := c.validate(); err != nil {
		return nil, nil, err
	}
	level, _ := c.level()
	var out io.Writer
	closer := io.Closer(nopCloser{})
	switch c.Output {
	case "", "stderr":
		out = os.Stderr
	case "stdout":
		out = os.Stdout
	default:
		f, err := os.OpenFile(c.Output, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("setting Log.Output: %w", err)
		}
		out, closer = f, f
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(out, opts)), closer, nil
	}
	return slog.New(slog.NewTextHandler(out, opts)), closer, nil
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }
