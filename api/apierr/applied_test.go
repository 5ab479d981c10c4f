package apierr

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestNotAppliedCrossesTheWire: a write's failure marked NotApplied keeps
// its sentinel and its mark through ToStatus and FromStatus, on the agent
// that relays it too; an unmarked one, or one MaybeApplied cleared, says
// nothing of the sort.
func TestNotAppliedCrossesTheWire(t *testing.T) {
	cutOff := fmt.Errorf("%w: this agent is cut off from the leader", ErrNoLeader)
	got := FromStatus(ToStatus(NotApplied(cutOff)))
	if !IsNotApplied(got) || !errors.Is(got, ErrNoLeader) {
		t.Fatalf("NotApplied(no leader) across the wire = %v: not applied %v, no leader %v; want both", got, IsNotApplied(got), errors.Is(got, ErrNoLeader))
	}
	if !strings.Contains(got.Error(), "the write was not applied") {
		t.Fatalf("message %q does not say the write was not applied", got.Error())
	}
	// An agent relaying what the leader answered passes the mark on.
	if relayed := FromStatus(ToStatus(fmt.Errorf("forwarded: %w", got))); !IsNotApplied(relayed) {
		t.Fatalf("relayed %v lost the mark", relayed)
	}
	// A status error marked where it is relayed gets the mark.
	if marked := FromStatus(ToStatus(NotApplied(ToStatus(cutOff)))); !IsNotApplied(marked) || !errors.Is(marked, ErrNoLeader) {
		t.Fatalf("a status error marked NotApplied = %v: not applied %v", marked, IsNotApplied(marked))
	}
	for _, err := range []error{
		cutOff,
		FromStatus(ToStatus(cutOff)),
		MaybeApplied(got),
		FromStatus(ToStatus(MaybeApplied(NotApplied(cutOff)))),
		fmt.Errorf("%w: the leader did not answer", ErrOutcomeUnknown),
		nil,
	} {
		if IsNotApplied(err) {
			t.Errorf("%v: says not applied", err)
		}
	}
	if NotApplied(nil) != nil {
		t.Error("NotApplied(nil) is not nil")
	}
}
