package raftstore

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/internal/testwait"
)

// lineRecorder is a slog handler that keeps every record.
type lineRecorder struct {
	mu    sync.Mutex
	lines []slog.Record
}

func (r *lineRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *lineRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, rec.Clone())
	return nil
}
func (r *lineRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *lineRecorder) WithGroup(string) slog.Handler      { return r }

// matching returns the records whose message contains s, as text.
func (r *lineRecorder) matching(s string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.lines {
		if strings.Contains(rec.Message, s) {
			var b bytes.Buffer
			b.WriteString(rec.Level.String() + " " + rec.Message)
			rec.Attrs(func(a slog.Attr) bool {
				b.WriteString(" " + a.String())
				return true
			})
			out = append(out, b.String())
		}
	}
	return out
}

// TestRepeatedPeerFailuresCollapseToASummary: 1,000 identical failures
// about one dead peer give its first line and a summary with the count
// every 30 s; failures about another peer are not merged into them; lines
// about no peer pass unchanged; and once the failures stop, one line says
// so.
func TestRepeatedPeerFailuresCollapseToASummary(t *testing.T) {
	rec := &lineRecorder{}
	now := time.Unix(1000, 0)
	a := NewHCLog(slog.New(rec), "raft").(*hclogAdapter)
	a.noise.now = func() time.Time { return now }

	for i := range 1000 {
		a.Error("failed to heartbeat to", "peer", "127.0.0.1:8401", "backoff time", time.Duration(i)*time.Millisecond, "error", "connection refused")
		if i%100 == 0 {
			a.Error("failed to heartbeat to", "peer", "127.0.0.2:8401", "error", "connection refused")
			a.Error("failed to list snapshots", "error", "disk on fire")
		}
		now = now.Add(40 * time.Millisecond) // 40 s in all
	}
	lines := rec.matching("failed to heartbeat to")
	var first, second []string
	for _, l := range lines {
		if strings.Contains(l, "127.0.0.1:8401") {
			first = append(first, l)
		} else {
			second = append(second, l)
		}
	}
	if len(first) < 2 || len(first) > 3 {
		t.Fatalf("1000 failures of one peer over 40 s gave %d lines, want the first and a summary: %q", len(first), first)
	}
	if !strings.Contains(first[1], "repeated 750 times in the last 30s") {
		t.Fatalf("summary line %q does not count the 750 failures of the last 30 s", first[1])
	}
	if len(second) < 1 || !strings.Contains(second[0], "127.0.0.2:8401") || strings.Contains(second[0], "repeated") {
		t.Fatalf("the other peer's failures were merged: %q", second)
	}
	if n := len(rec.matching("failed to list snapshots")); n != 10 {
		t.Fatalf("a repeated line about no peer was written %d times, want all 10", n)
	}
	if n := a.noise.suppressedLines(); n < 990 {
		t.Fatalf("suppressed %d lines, want at least 990", n)
	}

	now = now.Add(noiseQuiet)
	a.Info("entering leader state")
	stopped := rec.matching("failed to heartbeat to: stopped after")
	if len(stopped) != 2 || !strings.Contains(strings.Join(stopped, "\n"), "stopped after 1000 times") {
		t.Fatalf("after the failures stopped: %q, want one line for each peer, the first after 1000 times", stopped)
	}
	if n := len(rec.matching("entering leader state")); n != 1 {
		t.Fatalf("a line about no peer was written %d times, want once", n)
	}
}

// TestPeerRepliesAgainEndsItsFailures: a line below warning that names a
// failing peer (raft replicating to it again) ends the run of failures
// with one line; the next failure is written in full.
func TestPeerRepliesAgainEndsItsFailures(t *testing.T) {
	rec := &lineRecorder{}
	a := NewHCLog(slog.New(rec), "raft")
	for range 10 {
		a.Error("failed to appendEntries to", "peer", "n2", "error", "EOF")
	}
	a.Info("pipelining replication", "peer", "n2")
	a.Error("failed to appendEntries to", "peer", "n2", "error", "EOF")
	lines := rec.matching("failed to appendEntries to")
	if len(lines) != 3 || !strings.Contains(lines[1], "stopped after 10 times") {
		t.Fatalf("lines = %q, want the first failure, the end after 10, and the next failure", lines)
	}
	// A warning that came once needs no line saying it stopped.
	a.Info("pipelining replication", "peer", "n2")
	if lines := rec.matching("stopped after"); len(lines) != 1 {
		t.Fatalf("lines saying a run stopped: %q, want only the one after 10 failures", lines)
	}
}

// TestTransportHangUpIsNotAnError: a peer that drops its Raft connection
// in the middle of a command (killed) is logged below warning; so is
// raft's line on bytes that are not a Raft command, which names no
// sender (the stream's guard warns of those: transport_guard_test.go).
func TestTransportHangUpIsNotAnError(t *testing.T) {
	rec := &lineRecorder{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: NewTCPStreamLayer(ln, ln.Addr()), MaxPool: 1, Timeout: time.Second,
		Logger: NewHCLog(slog.New(rec), "raft-net"),
	})
	t.Cleanup(func() { trans.Close() })

	send := func(b []byte, reset bool) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(b)
		if reset {
			c.(*net.TCPConn).SetLinger(0) // close with a reset, as a killed process's kernel does
		}
		c.Close()
	}
	// An AppendEntries command (type 0) cut off after its first bytes.
	send([]byte{0, 0x8a, 0xa4}, true)
	testwait.For(t, 10*time.Second, "the cut-off command to be logged", func() bool { return len(rec.matching(decodeFailed)) == 1 })
	if l := rec.matching(decodeFailed)[0]; !strings.HasPrefix(l, "DEBUG") {
		t.Fatalf("a peer hanging up mid-command logged %q, want DEBUG", l)
	}
	send([]byte{99}, false)
	testwait.For(t, 10*time.Second, "the bad command to be logged", func() bool { return len(rec.matching(decodeFailed)) == 2 })
	if l := rec.matching(decodeFailed)[1]; !strings.HasPrefix(l, "DEBUG") {
		t.Fatalf("a command of unknown type logged %q, want DEBUG", l)
	}
}
