package gossip

import (
	"encoding/binary"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestClockOffsetFromAnAck: the prober takes the acker's clock minus the
// middle of the round trip on its own clock; acks without a clock, or
// with one out of range, change nothing.
func TestClockOffsetFromAnAck(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	logs := &logRecords{}
	mine := newClocks(slog.New(recordingHandler{Handler: slog.DiscardHandler, rec: logs}), func() time.Time { return t0 })
	theirs := newClocks(slog.New(slog.DiscardHandler), func() time.Time { return t0.Add(90*time.Minute - 5*time.Millisecond) })
	b := &memberlist.Node{Name: "b"}

	// The ack left b 5 ms before it reached this agent, after a 10 ms
	// round trip: b's clock at the middle of it read t0+90m-5ms, this
	// agent's t0-5ms.
	mine.NotifyPingComplete(b, 10*time.Millisecond, theirs.AckPayload())
	if got, ok := mine.offset("b"); !ok || got != 90*time.Minute {
		t.Fatalf("offset of b = %v, %v; want 90m", got, ok)
	}
	if n := len(logs.matching(clockWarning)); n != 1 {
		t.Fatalf("%d warnings of a clock 90 minutes off, want 1", n)
	}
	mine.NotifyPingComplete(b, 10*time.Millisecond, theirs.AckPayload())
	if n := len(logs.matching(clockWarning)); n != 1 {
		t.Fatalf("%d warnings after a second probe, want still 1 (one per %s)", n, clockWarnEvery)
	}

	clock := func(v byte, nanos int64) []byte {
		p := make([]byte, ackClockLen)
		p[0] = v
		binary.BigEndian.PutUint64(p[1:], uint64(nanos))
		return p
	}
	for name, payload := range map[string][]byte{
		"none (an older build)": nil,
		"short":                 {ackClockVersion, 1, 2},
		"long":                  append(clock(ackClockVersion, t0.UnixNano()), 0),
		"another version":       clock(2, t0.UnixNano()),
		"before 1970":           clock(ackClockVersion, -1),
		"zero":                  clock(ackClockVersion, 0),
		"past 2116":             clock(ackClockVersion, math.MaxInt64),
	} {
		mine.NotifyPingComplete(b, time.Millisecond, payload)
		if got, _ := mine.offset("b"); got != 90*time.Minute {
			t.Errorf("an ack with a clock %s changed b's offset to %v", name, got)
		}
	}
	mine.NotifyPingComplete(b, -time.Second, theirs.AckPayload())
	mine.NotifyPingComplete(nil, time.Millisecond, theirs.AckPayload())
	if got, _ := mine.offset("b"); got != 90*time.Minute {
		t.Errorf("a negative round trip changed b's offset to %v", got)
	}

	// A clock within ClockSkewWarn is recorded but not warned of.
	c := newClocks(slog.New(slog.DiscardHandler), func() time.Time { return t0.Add(-300 * time.Millisecond) })
	mine.NotifyPingComplete(&memberlist.Node{Name: "c"}, 0, c.AckPayload())
	if got, ok := mine.offset("c"); !ok || got != -300*time.Millisecond {
		t.Fatalf("offset of c = %v, %v; want -300ms", got, ok)
	}
	if n := len(logs.matching(clockWarning)); n != 1 {
		t.Fatalf("%d warnings, want only b's: c is within %s", n, ClockSkewWarn)
	}
	mine.forget("b")
	if _, ok := mine.offset("b"); ok {
		t.Fatal("a member that went still has a clock offset")
	}
}

// TestMembersMeasureEachOthersClock: two agents whose clocks are an hour
// apart see it, each from its side, through their probes.
func TestMembersMeasureEachOthersClock(t *testing.T) {
	a := startAgent(t, "a", nil)
	b := startAgent(t, "b", func(cfg *Config) {
		cfg.Clock = func() time.Time { return time.Now().Add(time.Hour) }
	})
	if _, err := b.Join(t.Context(), []string{a.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	near := func(d, want time.Duration) bool { return (d - want).Abs() < time.Second }
	waitFor(t, "each agent to measure the other's clock", func() bool {
		ab, okA := a.ClockOffset("b")
		ba, okB := b.ClockOffset("a")
		return okA && okB && near(ab, time.Hour) && near(ba, -time.Hour)
	})
	if d, ok := a.ClockOffset("a"); ok {
		t.Fatalf("an agent measured its own clock: %v", d)
	}
}
