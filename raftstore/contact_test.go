package raftstore

import (
	"errors"
	"testing"
	"time"
)

func TestCutOffCountsFromTheLastLeaderContact(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	const bound = 5 * time.Second
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	cases := []struct {
		name         string
		leader       bool
		heard, ledAt time.Time
		cut          bool
	}{
		{name: "a leader", leader: true},
		{name: "a follower the leader replicated to just now", heard: ago(10 * time.Millisecond)},
		{name: "a follower within the bound", heard: ago(bound - time.Millisecond)},
		{name: "a follower past the bound", heard: ago(bound + time.Millisecond), cut: true},
		{name: "a follower never replicated to", cut: true},
		{name: "a leader that stepped down just now, long unreplicated to", heard: ago(time.Hour), ledAt: ago(300 * time.Millisecond)},
		{name: "a leader that stepped down long ago", heard: ago(time.Hour), ledAt: ago(bound + time.Second), cut: true},
		{name: "an agent that led once and was replicated to since", heard: ago(time.Second), ledAt: ago(time.Hour)},
	}
	for _, tc := range cases {
		err := cutOff(now, tc.leader, tc.heard, tc.ledAt, bound)
		if (err != nil) != tc.cut {
			t.Errorf("%s: cutOff = %v, want cut off %v", tc.name, err, tc.cut)
		}
		if err != nil && !errors.Is(err, ErrStaleRead) {
			t.Errorf("%s: %v is not ErrStaleRead", tc.name, err)
		}
	}
}

// TestIsolationCountsFromTheLastPeerOrTheResumption: a peer is silent
// once it has not been heard for the bound, counted from when it was last
// heard, or from when this process resumed after standing still,
// whichever is later: silence while it did not run says nothing of the
// network.
func TestIsolationCountsFromTheLastPeerOrTheResumption(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	const bound = time.Second
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	cases := []struct {
		name           string
		heard, resumed time.Time
		isolated       bool
	}{
		{name: "heard just now", heard: ago(10 * time.Millisecond)},
		{name: "heard within the bound", heard: ago(bound - time.Millisecond)},
		{name: "silent past the bound", heard: ago(bound + time.Millisecond), isolated: true},
		{name: "never heard", isolated: true},
		{name: "never heard, resumed from a stall just now", resumed: ago(100 * time.Millisecond)},
		{name: "silent long, but resumed from a stall just now", heard: ago(time.Minute), resumed: ago(100 * time.Millisecond)},
		{name: "silent long, resumed past the bound", heard: ago(time.Minute), resumed: ago(bound + time.Millisecond), isolated: true},
		{name: "resumed long ago, heard since", heard: ago(100 * time.Millisecond), resumed: ago(time.Hour)},
	}
	for _, tc := range cases {
		silent, isolated := silentFor(now, tc.heard, tc.resumed, bound)
		if isolated != tc.isolated {
			t.Errorf("%s: isolated %v (silent %s), want %v", tc.name, isolated, silent, tc.isolated)
		}
	}
}
