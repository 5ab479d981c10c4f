package gossip

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"strings"
)

// newMemberlistLogger returns the *log.Logger memberlist wants, writing to
// l. memberlist marks each line with a level prefix ("[DEBUG] memberlist:
// ..."); logWriter turns that prefix into the slog level, so that the
// agent's level setting applies to memberlist too.
func newMemberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(&logWriter{l: l}, "", 0)
}

// logWriter is an io.Writer for log.Logger that parses memberlist's level
// prefixes. log.Logger calls Write once per line and serialises calls.
type logWriter struct {
	l *slog.Logger
}

var memberlistLevels = []struct {
	prefix string
	level  slog.Level
}{
	{"[DEBUG]", slog.LevelDebug},
	{"[INFO]", slog.LevelInfo},
	{"[WARN]", slog.LevelWarn},
	{"[ERR]", slog.LevelError},
	{"[ERROR]", slog.LevelError},
}

func (w *logWriter) Write(p []byte) (int, error) {
	level, msg := parseMemberlistLine(string(bytes.TrimRight(p, "\r\n")))
	w.l.Log(context.Background(), level, msg)
	return len(p), nil
}

// parseMemberlistLine splits "[WARN] memberlist: text" into its level and
// "text". A line without a known prefix is logged at Info, whole.
func parseMemberlistLine(line string) (slog.Level, string) {
	level := slog.LevelInfo
	for _, l := range memberlistLevels {
		if rest, ok := strings.CutPrefix(line, l.prefix); ok {
			level, line = l.level, strings.TrimSpace(rest)
			break
		}
	}
	return level, strings.TrimPrefix(line, "memberlist: ")
}
