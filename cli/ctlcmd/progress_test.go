package ctlcmd

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// fakeClock is a clock the test moves.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestProgressBarRedrawsAtMostTenTimesASecond(t *testing.T) {
	var out bytes.Buffer
	clock := &fakeClock{t: time.Unix(1000, 0)}
	b := newProgressBarTo(&out, "put models/v3.bin", 4<<20, clock.now)
	draws := func() int { return strings.Count(out.String(), "\r") }

	clock.t = clock.t.Add(time.Second)
	b.set(1 << 20)
	if draws() != 1 {
		t.Fatalf("first update: %d drawings, want 1", draws())
	}
	for range 50 { // 50 updates within 50ms
		clock.t = clock.t.Add(time.Millisecond)
		b.add(1)
	}
	if draws() != 1 {
		t.Fatalf("updates within %s redrew: %d drawings, want 1", progressInterval, draws())
	}
	clock.t = clock.t.Add(progressInterval)
	b.set(2 << 20)
	if draws() != 2 {
		t.Fatalf("update after %s: %d drawings, want 2", progressInterval, draws())
	}
	want := "\rput models/v3.bin [==========          ]  50%  2.0 MiB / 4.0 MiB"
	if last := out.String()[strings.LastIndex(out.String(), "\r"):]; !strings.HasPrefix(last, want) {
		t.Errorf("drawing = %q, want it to start with %q", last, want)
	}
	b.finish()
	if !strings.HasSuffix(out.String(), "\n") {
		t.Errorf("finish did not end the line: %q", out.String())
	}
	n := out.Len()
	b.set(3 << 20)
	b.finish()
	if out.Len() != n {
		t.Errorf("the bar drew after finish: %q", out.String()[n:])
	}
}

func TestProgressBarLine(t *testing.T) {
	tests := []struct {
		name        string
		label       string
		total, done int64
		elapsed     time.Duration
		want        string
	}{
		{"known total", "get a", 1000, 250, 2 * time.Second, "get a [=====               ]  25%  250 B / 1000 B  125 B/s"},
		{"done", "get a", 3 << 30, 3 << 30, time.Second, "get a [====================] 100%  3.0 GiB / 3.0 GiB  3.0 GiB/s"},
		{"unknown total", "put -", -1, 5 << 20, time.Second, "put -  5.0 MiB  5.0 MiB/s"},
		{"empty blob", "put e", 0, 0, 0, "put e [====================] 100%  0 B / 0 B"},
		{"long label", "get " + strings.Repeat("x", 40), -1, 0, 0, "..." + strings.Repeat("x", 29) + "  0 B"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Unix(1000, 0)}
			b := newProgressBarTo(nil, tt.label, tt.total, clock.now)
			b.set(tt.done)
			if got := b.line(tt.elapsed); got != tt.want {
				t.Errorf("line = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestProgressBarQuietWithoutTerminal(t *testing.T) {
	var out bytes.Buffer
	b := newProgressBar(&out, "put x", 10)
	b.set(5)
	b.finish()
	if out.Len() != 0 {
		t.Fatalf("bar drew on a buffer: %q", out.String())
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		n    uint64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{300 << 10, "300.0 KiB"},
		{5<<20 + 512<<10, "5.5 MiB"},
		{1 << 30, "1.0 GiB"},
		{1 << 40, "1.0 TiB"},
		{1<<64 - 1, "16.0 EiB"},
	}
	for _, tt := range tests {
		if got := formatSize(tt.n); got != tt.want {
			t.Errorf("formatSize(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

// TestProgressBarSentNote: a put's bar says the agents are storing the
// blob once every byte is sent, and not after it finished.
func TestProgressBarSentNote(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	var out strings.Builder
	b := newProgressBarTo(&out, "put a", 1000, clock.now)
	b.sentNote = "(sent; storing)"
	b.set(500)
	if strings.Contains(b.line(time.Second), "storing") {
		t.Errorf("half sent: line %q has the note", b.line(time.Second))
	}
	b.set(1000) // drawn at once, although within the redraw interval
	if !strings.HasSuffix(strings.TrimRight(out.String(), " "), "(sent; storing)") {
		t.Errorf("all sent: drawing %q does not end with the note", out.String())
	}
	b.finish()
	last := out.String()[strings.LastIndex(out.String(), "\r")+1:]
	if strings.Contains(last, "storing") {
		t.Errorf("finished: last drawing %q still has the note", last)
	}
}
