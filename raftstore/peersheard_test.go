package raftstore

import (
	"strings"
	"testing"
	"time"
)

// When a peer was last heard comes back with a monotonic clock reading
// (time.Time's String shows it as "m="), so silence is measured on the
// monotonic clock: stored as wall-clock UnixNano it came back without
// one, and an NTP or VM clock step moved every peer's silence by the
// step (a forward step of a second cut an agent off during an election).
func TestPeersHeardKeepTheMonotonicClock(t *testing.T) {
	now := time.Now()
	if !strings.Contains(now.String(), "m=") {
		t.Skip("this platform's time.Now has no monotonic reading")
	}
	var p peersHeard
	p.note([]byte("n2"), now)
	for what, got := range map[string]time.Time{"last": p.last("n2"), "latest": p.latest()} {
		if !strings.Contains(got.String(), "m=") {
			t.Errorf("%s heard = %v, without a monotonic reading", what, got)
		}
		if !got.Equal(now) || got.Sub(now) != 0 {
			t.Errorf("%s heard = %v, want %v", what, got, now)
		}
	}
	if !p.last("n3").IsZero() {
		t.Errorf("a peer never heard: last = %v, want zero", p.last("n3"))
	}
}
