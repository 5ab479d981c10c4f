package gossip

import (
	"log/slog"
	"testing"
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
