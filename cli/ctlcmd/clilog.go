package ctlcmd

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"unicode"
)

// What the client logs while a command runs (a put starting over after
// an agent failed, a watch reconnecting) is written for the person at the
// terminal, one line a record, without the timestamp and key noise of a
// server log:
//
//	zrpcctl: warning: a put lost shards with an agent that failed; starting it over (blob=models/a.bin, attempt=2, in=1s, err="…")

// cliLogHandler is that slog.Handler. Records below its level are
// dropped; attributes follow the message as key=value, groups as
// group.key, values quoted when they hold spaces or punctuation.
type cliLogHandler struct {
	w     io.Writer
	mu    *sync.Mutex // one line at a time from every handler derived
	level slog.Level
	group string      // prefix of the keys of later attributes ("g." or "")
	attrs []slog.Attr // from WithAttrs, keys already prefixed
}

// newCLILogger returns a logger writing records of level and above to w.
func newCLILogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(&cliLogHandler{w: w, mu: new(sync.Mutex), level: level})
}

func (h *cliLogHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *cliLogHandler) Handle(_ context.Context, r slog.Record) error {
	var b bytes.Buffer
	b.WriteString("zrpcctl: ")
	switch {
	case r.Level >= slog.LevelError:
		b.WriteString("error: ")
	case r.Level >= slog.LevelWarn:
		b.WriteString("warning: ")
	}
	b.WriteString(r.Message)
	n := 0
	add := func(key string, v slog.Value) {
		if n == 0 {
			b.WriteString(" (")
		} else {
			b.WriteString(", ")
		}
		n++
		b.WriteString(key)
		b.WriteByte('=')
		b.WriteString(quoteValue(v.String()))
	}
	for _, a := range h.attrs {
		add(a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool {
		flatten(h.group, a, add)
		return true
	})
	if n > 0 {
		b.WriteByte(')')
	}
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.w.Write(b.Bytes())
	return err
}

func (h *cliLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range attrs {
		flatten(h.group, a, func(key string, v slog.Value) {
			c.attrs = append(c.attrs, slog.Attr{Key: key, Value: v})
		})
	}
	return &c
}

func (h *cliLogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.group = h.group + name + "."
	return &c
}

// flatten calls add for a, or for each attribute of a group, with its
// key prefixed; empty attributes and empty groups add nothing.
func flatten(prefix string, a slog.Attr, add func(string, slog.Value)) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() != slog.KindGroup {
		add(prefix+a.Key, a.Value)
		return
	}
	inner := prefix
	if a.Key != "" {
		inner = prefix + a.Key + "."
	}
	for _, g := range a.Value.Group() {
		flatten(inner, g, add)
	}
}

// quoteValue quotes s when it is empty or could be misread inside the
// parenthesised list: spaces, quotes, commas, '=', parentheses or
// characters that do not print.
func quoteValue(s string) string {
	if s == "" {
		return `""`
	}
	if strings.IndexFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || !unicode.IsPrint(r) || strings.ContainsRune(`"=,()`, r)
	}) >= 0 {
		return strconv.Quote(s)
	}
	return s
}
