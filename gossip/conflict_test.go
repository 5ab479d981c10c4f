package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestTwoAgentsUnderOneNameAreReportedByEveryMember: two agents with one
// name that join at the same time through members that have not yet heard
// of the other (here: two clusters of two that then merge) both get in;
// memberlist keeps, on each member, the address it heard of first and
// ignores the other. Every member that sees both counts the conflict as
// name_conflict and says, once a minute, what is wrong and what to do.
func TestTwoAgentsUnderOneNameAreReportedByEveryMember(t *testing.T) {
	logs := map[string]*logRecords{"c": {}, "d": {}}
	recording := func(name string) func(*Config) {
		return func(c *Config) {
			c.Logger = slog.New(recordingHandler{Handler: c.Logger.Handler(), rec: logs[name]})
		}
	}
	c := startAgent(t, "c", recording("c"))
	d := startAgent(t, "d", recording("d"))
	x1 := startAgent(t, "x", nil)
	x2 := startAgent(t, "x", nil)
	if _, err := x1.Join(context.Background(), []string{c.LocalAddr()}); err != nil {
		t.Fatalf("x joins c: %v", err)
	}
	if _, err := x2.Join(context.Background(), []string{d.LocalAddr()}); err != nil {
		t.Fatalf("the other x joins d: %v", err)
	}
	waitFor(t, "c to list x", func() bool { return hasStatus(c.Gossip, "x", StatusAlive) })
	waitFor(t, "d to list x", func() bool { return hasStatus(d.Gossip, "x", StatusAlive) })
	if _, err := c.Join(context.Background(), []string{d.LocalAddr()}); err != nil {
		t.Fatalf("c joins d: %v", err)
	}
	for _, a := range []*agent{c, d} {
		waitForOr(t, a.name+" to count the name x gossiped at two addresses", func() bool {
			return a.Refused()[RefusedNameConflict] > 0
		}, a.about("x"))
	}
	for name, l := range logs {
		lines := l.containing("a member's name is gossiped at a second address")
		if len(lines) != 1 {
			t.Errorf("%s wrote %d lines about the name x used twice, want 1", name, len(lines))
			continue
		}
		if text := recordText(lines[0]); !strings.Contains(text, x1.LocalAddr()) || !strings.Contains(text, x2.LocalAddr()) ||
			!strings.Contains(text, "--name") {
			t.Errorf("%s's line %q names not both addresses or what to do", name, text)
		}
	}
}

// TestAliveMessagesClaimingAMembersNameLogOnce: a stranger reaching the
// gossip port of an unencrypted cluster sends alive messages naming a
// member at addresses of its own. memberlist ignores them; the agent says
// so once, not once a message.
func TestAliveMessagesClaimingAMembersNameLogOnce(t *testing.T) {
	logs := &logRecords{}
	a := startAgent(t, "a", func(c *Config) {
		c.Logger = slog.New(recordingHandler{Handler: c.Logger.Handler(), rec: logs})
	})
	b := startAgent(t, "b", nil)
	if _, err := b.Join(context.Background(), []string{a.LocalAddr()}); err != nil {
		t.Fatalf("b joins a: %v", err)
	}
	waitFor(t, "a to list b", func() bool { return hasStatus(a.Gossip, "b", StatusAlive) })
	meta, err := b.meta.encode()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("udp", a.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const sent = 200
	for i := range sent {
		msg := msgpackOf(t, struct {
			Incarnation uint32
			Node        string
			Addr        []byte
			Port        uint16
			Meta        []byte
			Vsn         []uint8
		}{uint32(i + 100), "b", net.IPv4(127, 0, 0, 1).To4(), uint16(20000 + i), meta, []uint8{1, 5, 2, 0, 0, 0}})
		if _, err := conn.Write(append([]byte{4 /* memberlist's aliveMsg */}, msg...)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a to count the alive messages claiming b's name", func() bool {
		return a.Refused()[RefusedNameConflict] >= sent/2 // UDP on loopback may drop some
	})
	if m, _ := memberNamed(a.Gossip, "b"); m.Addr != b.LocalAddr() {
		t.Errorf("a lists b at %s, want %s", m.Addr, b.LocalAddr())
	}
	var lines int
	logs.mu.Lock()
	for _, r := range logs.recs {
		if r.Level >= slog.LevelWarn {
			lines++
		}
	}
	logs.mu.Unlock()
	if lines > 1 {
		t.Errorf("%d warnings and errors about %d alive messages claiming b's name, want 1", lines, sent)
	}
}

// recordText is r's message with its attributes.
func recordText(r slog.Record) string {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	return b.String()
}

// TestMergesNamingThisAgentElsewhereLogOnce: push/pulls whose state has
// this agent's name alive at another address (the other agent under its
// name, every push/pull interval, or anyone reaching the gossip port)
// are each refused and counted; the error is written once a minute, not
// once a push/pull.
func TestMergesNamingThisAgentElsewhereLogOnce(t *testing.T) {
	d, logs, events := delegateForTest(t)
	d.NotifyJoin(fakeNode(t, "self", 7, testMeta("self")))
	next(t, events)
	const merges = 50
	for i := range merges {
		other := fakeNode(t, "self", uint16(8+i), testMeta("self"))
		if err := d.NotifyMerge([]*memberlist.Node{other}); !errors.Is(err, ErrNameTaken) {
			t.Fatalf("merge %d: %v, want ErrNameTaken", i, err)
		}
	}
	if got := d.refused[RefusedNameTaken].Load(); got != merges {
		t.Errorf("%d refusals counted as name_taken, want %d", got, merges)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	if len(logs.recs) != 1 {
		t.Errorf("%d log lines about %d refused merges, want 1", len(logs.recs), merges)
	}
}

// TestMadeUpMembersStopAtTheMemberLimit: a stranger reaching the gossip
// port of an unencrypted cluster sends alive messages of members it makes
// up. Past the member limit they are ignored and counted, with one error
// line; members already in the table are still heard.
func TestMadeUpMembersStopAtTheMemberLimit(t *testing.T) {
	const limit = 20
	logs := &logRecords{}
	cfg := testConfig(t, "a")
	cfg.Logger = slog.New(recordingHandler{Handler: cfg.Logger.Handler(), rec: logs})
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.delegate.memberCap = limit
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	conn, err := net.Dial("udp", g.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	alive := func(name string, port int, incarnation uint32, build string) {
		t.Helper()
		m := testMeta(name)
		m.Build = build
		meta, err := m.encode()
		if err != nil {
			t.Fatal(err)
		}
		msg := msgpackOf(t, struct {
			Incarnation uint32
			Node        string
			Addr        []byte
			Port        uint16
			Meta        []byte
			Vsn         []uint8
		}{incarnation, name, net.IPv4(127, 0, 0, 1).To4(), uint16(port), meta, []uint8{1, 5, 2, 0, 0, 0}})
		if _, err := conn.Write(append([]byte{4 /* memberlist's aliveMsg */}, msg...)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; len(g.Members()) < limit; i++ {
		if i >= 10*limit {
			t.Fatalf("a lists %d members after %d alive messages, want %d", len(g.Members()), i, limit)
		}
		alive(fmt.Sprintf("made-up-%d", i), 20000+i, 1, "test")
		time.Sleep(time.Millisecond) // UDP on loopback drops a burst
	}
	for i := range 200 {
		alive(fmt.Sprintf("more-made-up-%d", i), 30000+i, 1, "test")
	}
	waitFor(t, "a to refuse made-up members past the limit, or to list them", func() bool {
		return g.Refused()[RefusedMemberLimit] >= 100 || len(g.Members()) > limit
	})
	if n := len(g.Members()); n > limit {
		t.Errorf("a lists %d members, want at most %d", n, limit)
	}
	if lines := logs.containing("the member table is full"); len(lines) != 1 {
		t.Errorf("%d lines about the full member table, want 1", len(lines))
	}
	waitFor(t, "a to take the new meta of a member it lists", func() bool {
		alive("made-up-0", 20000, 2, "v2")
		m, ok := g.Member("made-up-0")
		return ok && m.Meta.Build == "v2"
	})
}
