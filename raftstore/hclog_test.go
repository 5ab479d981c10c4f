package raftstore

import (
	"bytes"
	"context"
	"fmt"
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

// TestLinesAboutOnePeerCountAsOneWhateverNamesIt: raft names a peer by its
// Server, its ServerID or its Raft address in different lines (and the
// transport by "id"); all of them are that peer's, so a line replicating
// to it again ends every run of failures about it, and its repeated
// failures collapse whichever way they name it.
func TestLinesAboutOnePeerCountAsOneWhateverNamesIt(t *testing.T) {
	rec := &lineRecorder{}
	a := NewHCLog(slog.New(rec), "raft").(*hclogAdapter)
	a.noise.setResolve(func(addr string) (string, bool) { return "n3", addr == "127.0.0.1:8401" })
	server := raft.Server{Suffrage: raft.Voter, ID: "n3", Address: "127.0.0.1:8401"}
	for range 5 {
		a.Error("failed to heartbeat to", "peer", raft.ServerAddress("127.0.0.1:8401"), "error", "EOF")
		a.Error("failed to appendEntries to", "peer", server, "error", "EOF")
		a.Warn("failed to contact", "server-id", raft.ServerID("n3"), "time", time.Second)
		a.Warn("unable to get address for server, using fallback address", "id", raft.ServerID("n3"), "fallback", "127.0.0.1:8401")
	}
	for _, msg := range []string{"failed to heartbeat to", "failed to appendEntries to", "failed to contact", "unable to get address"} {
		if n := len(rec.matching(msg)); n != 1 {
			t.Errorf("%q written %d times, want once", msg, n)
		}
	}
	if l := rec.matching("failed to heartbeat to"); len(l) != 1 || !strings.Contains(l[0], "peer_id=n3") {
		t.Errorf("a line naming the peer by its address: %q, want it named by its id too", l)
	}
	a.Info("pipelining replication", "peer", server)
	stopped := rec.matching("stopped after 5 times")
	if len(stopped) != 4 {
		t.Fatalf("after the peer replied: %q, want one line for each of its four runs", stopped)
	}
	for _, l := range stopped {
		if !strings.Contains(l, "=n3") {
			t.Errorf("%q does not name the peer by its id", l)
		}
	}
}

// TestElectionsWithoutALeaderCollapseToASummary: an agent that cannot
// find a majority campaigns every election timeout; its first line is
// written, then one summary every 30 s counting the rounds, and one line
// when a leader is known again.
func TestElectionsWithoutALeaderCollapseToASummary(t *testing.T) {
	rec := &lineRecorder{}
	now := time.Unix(1000, 0)
	a := NewHCLog(slog.New(rec), "raft").(*hclogAdapter)
	a.noise.now = func() time.Time { return now }
	a.Warn("heartbeat timeout reached, starting election", "last-leader-id", "n1")
	for term := range 100 { // a round every 400 ms: 40 s
		a.Info("entering candidate state", "term", term)
		a.Info("pre-vote campaign failed, waiting for election timeout", "term", term, "tally", 1)
		now = now.Add(400 * time.Millisecond)
		a.Warn("Election timeout reached, restarting election")
	}
	written := len(rec.lines)
	if written < 5 || written > 6 {
		t.Fatalf("100 rounds over 40 s wrote %d lines, want the first round's four and a summary:\n%s", written, strings.Join(rec.matching(""), "\n"))
	}
	summary := rec.matching("elections without a leader (repeated")
	if len(summary) != 1 || !strings.Contains(summary[0], "repeated 76 times in the last 30s") {
		t.Fatalf("summary %q, want one counting the 76 rounds of its first 30 s", summary)
	}
	a.Info("entering follower state", "leader-id", "n2")
	if ended := rec.matching("elections without a leader: stopped after 100 times"); len(ended) != 1 {
		t.Fatalf("once a leader is known: %q, want one line saying the elections stopped", rec.matching("elections without"))
	}
	if n := len(rec.matching("entering follower state")); n != 1 {
		t.Errorf("the line that ended the elections was written %d times, want once", n)
	}

	// An election that finds a leader in its first round is written in
	// full and needs no line saying it stopped.
	rec.lines = nil
	a.Warn("heartbeat timeout reached, starting election", "last-leader-id", "n2")
	a.Info("entering candidate state", "term", 200)
	a.Info("entering leader state")
	if n := len(rec.lines); n != 3 {
		t.Errorf("an election won at once wrote %d lines, want its 3:\n%s", n, strings.Join(rec.matching(""), "\n"))
	}
}

// TestPeerAnsweringAgainIsLoggedAtOnce: when raft reaches a peer again,
// one line says so, with how long its failures went on, and the runs of
// failures about it are over (its next failure is written in full).
func TestPeerAnsweringAgainIsLoggedAtOnce(t *testing.T) {
	rec := &lineRecorder{}
	now := time.Unix(1000, 0)
	a := NewHCLog(slog.New(rec), "raft").(*hclogAdapter)
	a.noise.now = func() time.Time { return now }
	for range 20 {
		a.Error("failed to heartbeat to", "peer", raft.ServerID("n3"), "error", "EOF")
		now = now.Add(500 * time.Millisecond)
	}
	a.Warn("failed to contact", "server-id", raft.ServerID("n3"))
	a.peerBack("n2") // another peer: nothing to say
	a.peerBack("n3")
	back := rec.matching("peer answers again")
	if len(back) != 1 || !strings.Contains(back[0], "peer=n3") || !strings.Contains(back[0], "failing_for=10s") || !strings.Contains(back[0], "failure_lines=21") {
		t.Fatalf("after n3 answered: %q, want one line naming n3, failing for 10s, 21 lines", back)
	}
	a.Error("failed to heartbeat to", "peer", raft.ServerID("n3"), "error", "EOF")
	if n := len(rec.matching("failed to heartbeat to")); n != 2 {
		t.Fatalf("a failure after the peer answered again was not written in full (%d lines)", n)
	}
	a.peerBack("n3")
	a.peerBack("n3")
	if n := len(rec.matching("peer answers again")); n != 2 {
		t.Errorf("%d lines say n3 answers again, want 2: one per run of failures", n)
	}
}

// TestRecoveredPeerIsLoggedByTheLeader: a follower cut off and healed is
// logged by the leader as answering again, as soon as its heartbeats do.
func TestRecoveredPeerIsLoggedByTheLeader(t *testing.T) {
	rec := &lineRecorder{}
	layers := make([]*cuttableLayer, 3)
	stores := openCluster(t, 3, func(i int, cfg *Config) {
		layers[i] = newCuttableLayer(t)
		cfg.StreamLayer = layers[i]
		cfg.Logger = slog.New(rec)
	})
	leader := leaderOf(t, stores)
	cut := (indexOf(stores, leader) + 1) % len(stores)
	peer := stores[cut].cfg.NodeID
	layers[cut].setCut(true)
	testwait.For(t, 10*time.Second, "the leader to fail heartbeats to "+peer, func() bool {
		return len(rec.matching("failed to heartbeat to")) > 0
	})
	layers[cut].setCut(false)
	testwait.For(t, 20*time.Second, "the leader to log that "+peer+" answers again", func() bool {
		for _, l := range rec.matching("peer answers again") {
			if strings.Contains(l, "peer="+peer) {
				return true
			}
		}
		return false
	})
}

// TestElectionsCollapseAtWarnLevelToo: with the agent logging warnings
// only, the info lines that count election rounds are still seen, so the
// rounds' warnings collapse as well.
func TestElectionsCollapseAtWarnLevelToo(t *testing.T) {
	var buf bytes.Buffer
	a := NewHCLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})), "raft")
	for term := range 100 {
		a.Info("entering candidate state", "term", term)
		a.Warn("Election timeout reached, restarting election")
	}
	if n := strings.Count(buf.String(), "Election timeout reached"); n != 1 {
		t.Errorf("100 rounds at warn level wrote the round's warning %d times, want once:\n%s", n, buf.String())
	}
	if strings.Contains(buf.String(), "entering candidate state") {
		t.Errorf("an info line was written at warn level:\n%s", buf.String())
	}
}

// TestRefusalsFromManyHostsCollapsePastTheBound: refused connections
// from more distinct hosts than the bound (a stranger with an address
// range) keep the table of runs bounded: past it, their lines collapse
// into one run about other peers, written once and then summarised.
func TestRefusalsFromManyHostsCollapsePastTheBound(t *testing.T) {
	rec := &lineRecorder{}
	now := time.Unix(1000, 0)
	a := NewHCLog(slog.New(rec), "raft-net").(*hclogAdapter)
	a.noise.now = func() time.Time { return now }
	const hosts = 3 * maxNoisyPeers
	for i := range hosts {
		a.Warn(msgNotRaft, "from", fmt.Sprintf("2001:db8::%x", i), "bytes_read", 1)
		now = now.Add(time.Millisecond)
	}
	a.noise.mu.Lock()
	runs := len(a.noise.episodes)
	a.noise.mu.Unlock()
	if runs > maxNoisyPeers+1 {
		t.Fatalf("%d hosts left %d runs tracked, want at most %d", hosts, runs, maxNoisyPeers+1)
	}
	if n := len(rec.matching(msgNotRaft)); n != maxNoisyPeers+1 {
		t.Fatalf("%d hosts gave %d lines, want one per tracked host and one for the others (%d)", hosts, n, maxNoisyPeers+1)
	}
}
