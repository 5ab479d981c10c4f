package ctlcmd

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCLILogWritesOneReadableLinePerRecord(t *testing.T) {
	var out bytes.Buffer
	log := newCLILogger(&out, slog.LevelInfo)
	log.Warn("a put lost shards with an agent that failed; starting it over",
		"blob", "models/a.bin", "attempt", 2, "in", time.Second, "err", errors.New(`agent a3 (127.0.0.1:20032) failed: "EOF"`))
	log.Info("watch stream resumed", "endpoint", "127.0.0.1:2379")
	log.Error("renewing failed", "id", "")
	log.Debug("not shown", "k", "v")
	want := `zrpcctl: warning: a put lost shards with an agent that failed; starting it over (blob=models/a.bin, attempt=2, in=1s, err="agent a3 (127.0.0.1:20032) failed: \"EOF\"")
zrpcctl: watch stream resumed (endpoint=127.0.0.1:2379)
zrpcctl: error: renewing failed (id="")
`
	if got := out.String(); got != want {
		t.Fatalf("log lines:\n%s\nwant:\n%s", got, want)
	}
}

func TestCLILogLevelDropsQuieterRecords(t *testing.T) {
	var out bytes.Buffer
	log := newCLILogger(&out, slog.LevelWarn)
	log.Info("agent does not serve WatchMany")
	log.Warn("renewing a put's lease failed; retrying")
	if got, want := out.String(), "zrpcctl: warning: renewing a put's lease failed; retrying\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestCLILogQualifiesGroupsAndKeepsAttrsOfDerivedLoggers(t *testing.T) {
	var out bytes.Buffer
	log := newCLILogger(&out, slog.LevelInfo).With("blob", "b").WithGroup("put").With("id", "7f")
	log.Info("started", slog.Group("agent", "name", "a1", "addr", "127.0.0.1:1"), slog.Group("empty"), slog.Attr{}, "n", 3)
	want := "zrpcctl: started (blob=b, put.id=7f, put.agent.name=a1, put.agent.addr=127.0.0.1:1, put.n=3)\n"
	if got := out.String(); got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func TestCLILogQuotesWhatCouldBeMisread(t *testing.T) {
	for in, want := range map[string]string{
		"plain/value-1.2": "plain/value-1.2",
		"":                `""`,
		"two words":       `"two words"`,
		"a=b":             `"a=b"`,
		"x,y":             `"x,y"`,
		"f(x)":            `"f(x)"`,
		"tab\there":       `"tab\there"`,
		"bell\a":          `"bell\a"`,
	} {
		if got := quoteValue(in); got != want {
			t.Errorf("quoteValue(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestCLILogLinesStayWholeUnderConcurrentRecords(t *testing.T) {
	var out bytes.Buffer
	log := newCLILogger(&out, slog.LevelInfo)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := log.With("g", g) // derived handlers share the lock
			for range 50 {
				l.Warn("retrying", "payload", strings.Repeat("x", 200))
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 400 {
		t.Fatalf("%d lines, want 400", len(lines))
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "zrpcctl: warning: retrying (g=") || !strings.HasSuffix(l, strings.Repeat("x", 200)+")") {
			t.Fatalf("interleaved or cut line: %q", l)
		}
	}
}
