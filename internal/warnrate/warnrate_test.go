package warnrate

import (
	"fmt"
	"testing"
	"time"
)

// TestOneWarningPerSenderPerQuietPeriod: a sender's first warning passes,
// the next ones within the quiet period are held and counted in the one
// that passes after it; other senders are apart; with the table full, a
// new sender still passes once the old ones are quiet, and shares one
// line per quiet period with the other unremembered ones when none is.
func TestOneWarningPerSenderPerQuietPeriod(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(time.Minute, 2, func() time.Time { return now })
	if pass, held := l.Seen("a"); !pass || held != 0 {
		t.Fatalf("first warning about a: pass %v held %d", pass, held)
	}
	for range 5 {
		if pass, _ := l.Seen("a"); pass {
			t.Fatal("a warning about a within the quiet period passed")
		}
	}
	if pass, _ := l.Seen("b"); !pass {
		t.Fatal("the first warning about b was held")
	}
	if pass, _ := l.Seen("c"); !pass {
		t.Fatal("a third sender's warning, table full, was held")
	}
	if pass, _ := l.Seen("c"); pass {
		t.Fatal("a second warning past the bound passed within the quiet period")
	}
	now = now.Add(time.Minute)
	if pass, held := l.Seen("a"); !pass || held != 5 {
		t.Fatalf("a after the quiet period: pass %v held %d, want true 5", pass, held)
	}
	if pass, _ := l.Seen("new"); !pass {
		t.Fatal("a new sender held although b, quiet, could be forgotten")
	}
	if pass, _ := l.Seen("new"); pass {
		t.Fatal("new was not remembered in b's place")
	}
}

// TestSendersPastTheBoundShareOneLine: a stranger warned about from ever
// new addresses (spoofed UDP sources) gets one line per quiet period, not
// one per address.
func TestSendersPastTheBoundShareOneLine(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(time.Minute, 16, func() time.Time { return now })
	passed := 0
	for i := range 10_000 {
		if pass, _ := l.Seen(fmt.Sprintf("2001:db8::%x", i)); pass {
			passed++
		}
	}
	if passed != 16+1 {
		t.Fatalf("%d warnings about 10000 senders passed within one quiet period, want %d (one per sender remembered, one for the rest)", passed, 16+1)
	}
	now = now.Add(time.Minute)
	if pass, _ := l.Seen("2001:db8::ffff:1"); !pass {
		t.Fatal("a new sender after the quiet period was held")
	}
}

// TestTheSharedLineCountsWhatItStandsFor: past the bound, the line the
// unremembered senders share says how many warnings it held back and
// about how many senders (counted up to the bound), while Seen keeps
// reporting no count for it.
func TestTheSharedLineCountsWhatItStandsFor(t *testing.T) {
	now := time.Unix(1000, 0)
	const max = 16
	l := New(time.Minute, max, func() time.Time { return now })
	remembered := func() {
		for i := range max {
			l.Note(fmt.Sprint("r", i))
		}
	}
	remembered()
	if v := l.Note("c"); v != (Verdict{Pass: true, Shared: true, Held: 0, Senders: 1}) {
		t.Fatalf("the first warning past the bound: %+v, want the shared line about 1 sender, none held", v)
	}
	for i := range 10 {
		for range 2 {
			if v := l.Note(fmt.Sprint("d", i)); v.Pass {
				t.Fatalf("a warning past the bound within the quiet period passed: %+v", v)
			}
		}
	}
	if v := l.Note("r0"); v.Pass || v.Shared {
		t.Fatalf("a remembered sender within its quiet period: %+v, want held", v)
	}
	now = now.Add(time.Minute)
	if v := l.Note("r0"); v != (Verdict{Pass: true, Held: 1}) {
		t.Fatalf("a remembered sender after its quiet period: %+v, want its own line holding 1 back", v)
	}
	remembered() // written again, so remembered still
	if v := l.Note("new"); v != (Verdict{Pass: true, Shared: true, Held: 20, Senders: 11}) {
		t.Fatalf("past the bound a quiet period later: %+v, want the shared line holding 20 back about 11 senders", v)
	}

	now = now.Add(time.Minute)
	remembered()
	for i := range 10 * max {
		l.Note(fmt.Sprint("e", i))
	}
	now = now.Add(time.Minute)
	remembered()
	if v := l.Note("f"); v.Senders != max {
		t.Fatalf("the shared line after %d senders past the bound: %+v, want them counted up to %d", 10*max, v, max)
	}
	now = now.Add(time.Minute)
	remembered()
	l.Note("g")
	l.Note("g") // held: a count Seen does not report
	now = now.Add(time.Minute)
	remembered()
	if pass, held := l.Seen("h"); !pass || held != 0 {
		t.Fatalf("Seen of the shared line: pass %v held %d, want true 0 as ever", pass, held)
	}
}
