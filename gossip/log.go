package gossip

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/zrpcio/zrpc/internal/warnrate"
)

// newMemberlistLogger returns the *log.Logger memberlist wants, writing to
// l. memberlist marks each line with a level prefix ("[DEBUG] memberlist:
// ..."); logWriter turns that prefix into the slog level, so that the
// agent's level setting applies to memberlist too.
func newMemberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(&logWriter{l: l, now: time.Now, repeats: make(map[string]*repeatRun), senders: newSenderLog(time.Now)}, "", 0)
}

// logWriter is an io.Writer for log.Logger that parses memberlist's level
// prefixes and collapses its repeated failures (repeats). log.Logger calls
// Write once per line and serialises calls.
type logWriter struct {
	l       *slog.Logger
	now     func() time.Time // time.Now; tests set it
	repeats map[string]*repeatRun
	senders *warnrate.Limiter
}

// repeatingFailures are the beginnings of the lines memberlist writes
// again and again while a member is unreachable (each probe, each gossip
// round to a dead member for GossipToTheDeadTime); the member is named in
// the rest of the line.
var repeatingFailures = []string{
	"Failed fallback TCP ping: ",
	"Failed to send UDP ping: ",
	"Failed to send indirect UDP ping: ",
	"Failed to send UDP compound ping and suspect message to ",
	"Failed to send gossip to ",
	"Push/Pull with ",
	"Was able to connect to ",
	// an alive message NotifyAlive refused (another cluster's member,
	// meta over the limit): one line per message and push/pull; the
	// delegate's own warning names the member, once a minute.
	"ignoring alive message for ",
}

// repeatWindow is how often a run of repeated failures is summarised, and
// how long it must not recur to be over.
const repeatWindow = 30 * time.Second

// repeatRun is one run of a repeated failure.
type repeatRun struct {
	window, last    time.Time
	total, inWindow int
}

// logLine is one line to write.
type logLine struct {
	level slog.Level
	msg   string
}

// collapse judges a line: the first of a kind of repeated failure is
// written, later ones only as a summary at most every repeatWindow, and a
// run that has not recurred for repeatWindow ends with a line saying how
// often it came. It returns the lines to write.
func (w *logWriter) collapse(level slog.Level, msg string) []logLine {
	now := w.now()
	var out []logLine
	for kind, r := range w.repeats {
		if now.Sub(r.last) >= repeatWindow {
			if r.total > 1 {
				out = append(out, logLine{slog.LevelInfo, fmt.Sprintf("%s...: stopped after %d times", kind, r.total)})
			}
			delete(w.repeats, kind)
		}
	}
	kind := ""
	for _, k := range repeatingFailures {
		if strings.HasPrefix(msg, k) {
			kind = k
			break
		}
	}
	if kind == "" || level < slog.LevelWarn {
		return append(out, logLine{level, msg})
	}
	r := w.repeats[kind]
	if r == nil {
		w.repeats[kind] = &repeatRun{window: now, last: now, total: 1}
		return append(out, logLine{level, msg})
	}
	r.last = now
	r.total++
	r.inWindow++
	if now.Sub(r.window) >= repeatWindow {
		out = append(out, logLine{level, fmt.Sprintf("%s (repeated %d times in the last %s)", msg, r.inWindow, now.Sub(r.window).Round(time.Second))})
		r.window, r.inWindow = now, 0
	}
	return out
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

// hints are what an operator needs to act on a memberlist line that
// contains the key: appended to it.
var hints = []struct{ contains, hint string }{
	{"no installed keys could decrypt the message",
		"the other side gossips with a key this agent does not hold: an agent started with an old --encrypt-file after `zrpcctl keyring` rotated the key, or without its data dir's gossip-keyring, needs the cluster's current key (`zrpcctl keyring list` shows the primary)"},
}

func (w *logWriter) Write(p []byte) (int, error) {
	level, msg := parseMemberlistLine(string(bytes.TrimRight(p, "\r\n")))
	for _, h := range hints {
		if strings.Contains(msg, h.contains) {
			msg += " (" + h.hint + ")"
		}
	}
	// memberlist prints both metas of a refuted alive message as decimal
	// byte lists: hundreds of numbers no one can read.
	if rest, ok := strings.CutPrefix(msg, "Refuting an alive message for "); ok {
		who, _, _ := strings.Cut(rest, " meta:(")
		msg = "Refuting an alive message for " + who + " that differs from this agent's own (a restart of this agent the others had not yet seen, or another agent with its name)"
	}
	// memberlist writes an error for every alive message naming a member
	// at another address, which anyone reaching the gossip port can send;
	// the delegate's NotifyConflict says it once a minute per name, with
	// what to do.
	if strings.HasPrefix(msg, "Conflicting address for ") {
		level = slog.LevelDebug
	}
	if host, ok := sender(msg); ok && level >= slog.LevelWarn {
		// Whatever anyone sends the gossip port that memberlist cannot
		// use (garbage, a broken or unencrypted packet, a stream cut
		// short) is a line naming its sender: a warning, once per
		// sender and senderQuiet, not a line per packet.
		level = slog.LevelWarn
		pass, more := w.senders.Seen(host)
		if !pass {
			level = slog.LevelDebug
		} else if more > 0 {
			msg = fmt.Sprintf("%s (and %d more such lines from %s since the last)", msg, more, host)
		}
		w.l.Log(context.Background(), level, msg)
		return len(p), nil
	}
	// Failures about a member (probes, gossip, push/pull to one that is
	// down) collapse into runs by kind.
	for _, line := range w.collapse(level, msg) {
		w.l.Log(context.Background(), line.level, line.msg)
	}
	return len(p), nil
}

// sender returns the host of the "from=host:port" memberlist ends a line
// about what it received with.
func sender(msg string) (string, bool) {
	i := strings.LastIndex(msg, "from=")
	if i < 0 {
		return "", false
	}
	addr, _, _ := strings.Cut(msg[i+len("from="):], " ")
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host, true
	}
	return addr, addr != ""
}

// senderQuiet is how long after a warning about a sender further ones
// from it are counted instead of written; maxSenders bounds how many
// senders are remembered.
const (
	senderQuiet = time.Minute
	maxSenders  = 1024
)

// newSenderLog is the limiter of warnings about what senders sent: one
// per sender each senderQuiet, at most maxSenders remembered.
func newSenderLog(now func() time.Time) *warnrate.Limiter {
	return warnrate.New(senderQuiet, maxSenders, now)
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
