package gossip

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestUpdateMetaAfterMemberlistDroppedItsOwnEntry: once memberlist counts
// this agent left, it drops the agent's own entry from its member table
// after GossipToTheDeadTime, and its UpdateNode then dereferences the
// missing entry (a test run under load crashed there). UpdateMeta must
// answer with an error that says to restart, and the agent keep running.
func TestUpdateMetaAfterMemberlistDroppedItsOwnEntry(t *testing.T) {
	cfg := testConfig(t, "a")
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.mc.GossipToTheDeadTime = time.Millisecond
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	// memberlist's own leave, under Gossip's feet: Gossip still thinks
	// it is a member, as it did when the run crashed.
	if err := g.ml.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "memberlist to drop its own entry", func() bool { return ownEntryGone(g) })

	if err := readvertise(g.ml, time.Second); !errors.Is(err, errNotListed) {
		t.Fatalf("re-advertising without an own entry: %v, want errNotListed", err)
	}
	meta := cfg.Meta
	meta.Build = "v2"
	err = g.UpdateMeta(meta)
	if !errors.Is(err, errNotListed) {
		t.Fatalf("UpdateMeta without an own entry: %v, want errNotListed", err)
	}
	if got := err.Error(); !strings.Contains(got, "restart") {
		t.Errorf("UpdateMeta's error %q does not say to restart the agent", got)
	}
	if _, err := g.running(); err != nil {
		t.Errorf("gossip after the failed update: %v, want still running", err)
	}
}

// ownEntryGone reports whether memberlist's table has lost the agent's own
// entry: its LocalNode dereferences the entry and panics without it.
func ownEntryGone(g *Gossip) (gone bool) {
	defer func() { gone = recover() != nil }()
	g.ml.LocalNode()
	return false
}
