package gossip

import (
	"log"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestParseMemberlistLine(t *testing.T) {
	tests := []struct {
		line      string
		wantLevel slog.Level
		wantMsg   string
	}{
		{"[DEBUG] memberlist: Initiating push/pull sync with: b 127.0.0.1:7946", slog.LevelDebug, "Initiating push/pull sync with: b 127.0.0.1:7946"},
		{"[INFO] memberlist: Marking b as failed, suspect timeout reached (1 peer confirmations)", slog.LevelInfo, "Marking b as failed, suspect timeout reached (1 peer confirmations)"},
		{"[WARN] memberlist: Refuting a suspect message (from: b)", slog.LevelWarn, "Refuting a suspect message (from: b)"},
		{"[ERR] memberlist: Failed to decrypt packet", slog.LevelError, "Failed to decrypt packet"},
		{"[ERR] Failed to shutdown transport: boom", slog.LevelError, "Failed to shutdown transport: boom"},
		{"no prefix at all", slog.LevelInfo, "no prefix at all"},
	}
	for _, tt := range tests {
		level, msg := parseMemberlistLine(tt.line)
		if level != tt.wantLevel || msg != tt.wantMsg {
			t.Errorf("parse(%q) = %s %q, want %s %q", tt.line, level, msg, tt.wantLevel, tt.wantMsg)
		}
	}
}

func TestMemberlistLoggerWritesAtParsedLevel(t *testing.T) {
	logs := &logRecords{}
	l := newMemberlistLogger(slog.New(recordingHandler{Handler: slog.DiscardHandler, rec: logs}))
	l.Printf("[WARN] memberlist: Got ping for unexpected node %s", "z")
	got := logs.matching("Got ping for unexpected node z")
	if len(got) != 1 || got[0].Level != slog.LevelWarn {
		t.Fatalf("records %+v, want one WARN", logs.recs)
	}
}

// TestMemberlistKeyMismatchSaysWhatToDo: a line saying gossip could not
// be decrypted says why that happens and where the current key is.
func TestMemberlistKeyMismatchSaysWhatToDo(t *testing.T) {
	logs := &logRecords{}
	l := newMemberlistLogger(slog.New(recordingHandler{Handler: slog.DiscardHandler, rec: logs}))
	l.Printf("[ERR] memberlist: Failed fallback TCP ping: no installed keys could decrypt the message")
	logs.mu.Lock()
	defer logs.mu.Unlock()
	if len(logs.recs) != 1 || !strings.HasPrefix(logs.recs[0].Message, "Failed fallback TCP ping: no installed keys could decrypt the message (the other side gossips with a key this agent does not hold") ||
		!strings.Contains(logs.recs[0].Message, "zrpcctl keyring list") {
		t.Fatalf("records %+v, want the line with the hint naming zrpcctl keyring list", logs.recs)
	}
}

// TestMemberlistRefuteLineLeavesOutTheMetaBytes: the refutation of an
// alive message names the member and why, without memberlist's dump of
// both metas as byte lists.
func TestMemberlistRefuteLineLeavesOutTheMetaBytes(t *testing.T) {
	logs := &logRecords{}
	l := newMemberlistLogger(slog.New(recordingHandler{Handler: slog.DiscardHandler, rec: logs}))
	l.Printf("[WARN] memberlist: Refuting an alive message for 'a2' (127.0.0.1:20022) meta:([123 34 118 34] VS [123 34 118 35]), vsn:([1 5 2 0 0 0] VS [1 5 2 0 0 0])")
	want := "Refuting an alive message for 'a2' (127.0.0.1:20022) that differs from this agent's own (a restart of this agent the others had not yet seen, or another agent with its name)"
	if got := logs.matching(want); len(got) != 1 || got[0].Level != slog.LevelWarn {
		t.Fatalf("records %+v, want one WARN %q", logs.recs, want)
	}
}

// TestRepeatedMemberlistFailuresCollapse: memberlist's failures to reach
// an unreachable member, written on every probe or gossip round, give the
// first line, a summary every 30 s, and a line once they stop; other lines
// pass as they are.
func TestRepeatedMemberlistFailuresCollapse(t *testing.T) {
	logs := &logRecords{}
	now := time.Unix(1000, 0)
	l := newMemberlistLogger(slog.New(recordingHandler{Handler: slog.DiscardHandler, rec: logs}))
	l.Writer().(*logWriter).now = func() time.Time { return now }
	for range 400 { // every 100 ms: 40 s
		l.Printf("[ERR] memberlist: Failed to send gossip to 10.0.0.3:8402: write udp: sendto: no route to host")
		l.Printf("[INFO] memberlist: Suspect n3 has failed, no acks received")
		now = now.Add(100 * time.Millisecond)
	}
	got := logs.containing("Failed to send gossip to 10.0.0.3:8402")
	if len(got) != 2 || got[0].Level != slog.LevelError || !strings.Contains(got[1].Message, "(repeated 300 times in the last 30s)") {
		t.Fatalf("400 failures over 40 s gave %d lines, want the first and a summary of the next 300: %+v", len(got), got)
	}
	if n := len(logs.containing("Suspect n3 has failed")); n != 400 {
		t.Errorf("an info line was written %d times of 400", n)
	}
	now = now.Add(repeatWindow)
	l.Printf("[INFO] memberlist: Marking n3 as failed")
	stopped := logs.containing("Failed to send gossip to ...: stopped after 400 times")
	if len(stopped) != 1 || stopped[0].Level != slog.LevelInfo {
		t.Fatalf("once the failures stopped: %+v, want one info line counting 400", stopped)
	}
}

// memberlist's line about each alive message gossip refused collapses
// like a repeated failure: a stranger sending alive messages costs a
// line every 30 s, not one per packet.
func TestRefusedAliveMessagesCollapse(t *testing.T) {
	logs := &logRecords{}
	now := time.Unix(1000, 0)
	l := newMemberlistLogger(slog.New(recordingHandler{Handler: slog.DiscardHandler, rec: logs}))
	l.Writer().(*logWriter).now = func() time.Time { return now }
	for i := range 100 {
		l.Printf("[WARN] memberlist: ignoring alive message for 'm%d': meta over memberlist's limit", i)
	}
	if got := logs.containing("ignoring alive message for"); len(got) != 1 || got[0].Level != slog.LevelWarn {
		t.Fatalf("100 refused alive messages within a second gave %d lines, want one warning: %+v", len(got), got)
	}
}

// containing returns the records whose message contains s.
func (l *logRecords) containing(s string) []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []slog.Record
	for _, r := range l.recs {
		if strings.Contains(r.Message, s) {
			out = append(out, r)
		}
	}
	return out
}

// What a stranger sends the gossip port that memberlist cannot use is
// warned of naming the sender, once a minute per sender: the lines in
// between are counted in the next warning, not written each.
func TestMemberlistLinesAboutOneSenderWarnOnceAMinute(t *testing.T) {
	logs := &logRecords{}
	now := time.Unix(1000, 0)
	w := &logWriter{l: slog.New(recordingHandler{Handler: slog.DiscardHandler, rec: logs}), now: func() time.Time { return now },
		repeats: make(map[string]*repeatRun), senders: newSenderLog(func() time.Time { return now })}
	l := log.New(w, "", 0)
	for i := range 100 {
		l.Printf("[ERR] memberlist: Received invalid msgType (%d) from=10.0.0.9:%d", i, 40000+i)
		l.Printf("[ERR] memberlist: missing message type byte from=10.0.0.7:7946")
	}
	warned := func() []string {
		var out []string
		for _, r := range logs.recs {
			if r.Level == slog.LevelWarn {
				out = append(out, r.Message)
			}
		}
		return out
	}
	if got := warned(); len(got) != 2 || !strings.Contains(got[0], "from=10.0.0.9:40000") || !strings.Contains(got[1], "from=10.0.0.7") {
		t.Fatalf("warnings %q, want one naming each sender", got)
	}
	now = now.Add(senderQuiet)
	l.Printf("[ERR] memberlist: Received invalid msgType (7) from=10.0.0.9:50000")
	if got := warned(); len(got) != 3 || !strings.Contains(got[2], "and 99 more such lines from 10.0.0.9") {
		t.Fatalf("warnings %q, want a third counting the 99 held back", got)
	}
	for _, r := range logs.recs {
		if r.Level > slog.LevelWarn {
			t.Fatalf("a stranger's bytes logged at %s: %q", r.Level, r.Message)
		}
	}
}
