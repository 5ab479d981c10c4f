package warnrate

import (
	"fmt"
	"testing"
	"time"
)

// TestOneWarningPerSenderPerQuietPeriod: a sender's first warning passes,
// the next ones within the quiet period are held and counted in the one
// that passes after it; other senders are apart; with the table full, a
// new sender still passes once the old ones are quiet, and passes
// unremembered when none is.
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
	if pass, _ := l.Seen("c"); !pass {
		t.Fatal("c was remembered although the table was full")
	}
	now = now.Add(time.Minute)
	if pass, held := l.Seen("a"); !pass || held != 5 {
		t.Fatalf("a after the quiet period: pass %v held %d, want true 5", pass, held)
	}
	for i := range 3 {
		if pass, _ := l.Seen(fmt.Sprint("new", i)); !pass {
			t.Fatalf("new sender %d held", i)
		}
	}
}
