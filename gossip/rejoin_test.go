package gossip

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRejoinerTriesFailedMembersWhileTheyBelong(t *testing.T) {
	timers := rejoinTimers{interval: time.Second, maxBackoff: 4 * time.Second}
	belongs := map[string]bool{"b": true, "c": true}
	seeds := []string{"10.0.0.9:8402", "10.0.0.1:8402"}
	r := newRejoiner("a", timers, func(name string) bool { return belongs[name] }, func() []string { return seeds })
	r.rand = func(n int) int { return n - 1 } // the longest wait, the last due target
	t0 := time.Unix(1000, 0)
	member := func(name, status string) Member {
		return Member{Name: name, Addr: "10.0.0." + name + ":8402", Status: status}
	}
	self := member("a", StatusAlive)

	// b failed, c alive: b is a target from one interval on; no seeds
	// while another member is alive.
	r.update([]Member{self, member("b", StatusFailed), member("c", StatusAlive)}, "10.0.0.1:8402", t0)
	if _, _, ok := r.pick(t0); ok {
		t.Fatal("a member that just failed is tried at once")
	}
	key, addr, ok := r.pick(t0.Add(time.Second))
	if !ok || key != "b" || addr != "10.0.0.b:8402" {
		t.Fatalf("pick = %q %q %v, want b", key, addr, ok)
	}
	// Each failed attempt doubles the wait, up to the cap.
	now := t0.Add(time.Second)
	for _, want := range []time.Duration{2 * time.Second, 4 * time.Second, 4 * time.Second} {
		r.done("b", true, now)
		if _, _, ok := r.pick(now.Add(want - time.Millisecond)); ok {
			t.Fatalf("tried again before %s", want)
		}
		if _, _, ok := r.pick(now.Add(want)); !ok {
			t.Fatalf("not tried again after %s", want)
		}
		now = now.Add(want)
	}
	// Forgotten by the member table but still in the cluster: kept. c fails
	// too, so this agent is alone: the seeds other than its own address
	// join the targets.
	r.update([]Member{self, member("c", StatusFailed)}, "10.0.0.1:8402", now)
	if got := targetKeys(r); got != "b c seed 10.0.0.9:8402" {
		t.Fatalf("targets = %q", got)
	}
	// Reaped (no longer a member): dropped; alive again: dropped, and the
	// seeds with it.
	delete(belongs, "b")
	r.update([]Member{self, member("c", StatusAlive)}, "10.0.0.1:8402", now)
	if got := targetKeys(r); got != "" {
		t.Fatalf("targets = %q, want none", got)
	}
}

func TestRejoinerWithoutStillMemberFollowsTheTable(t *testing.T) {
	r := newRejoiner("a", rejoinTimers{interval: time.Second, maxBackoff: time.Second}, nil, nil)
	t0 := time.Unix(1000, 0)
	r.update([]Member{{Name: "b", Addr: "10.0.0.2:8402", Status: StatusFailed}, {Name: "c", Addr: "10.0.0.3:8402", Status: StatusLeft}}, "", t0)
	if got := targetKeys(r); got != "b" {
		t.Fatalf("targets = %q, want b (left members are not rejoined)", got)
	}
	r.update(nil, "", t0)
	if got := targetKeys(r); got != "" {
		t.Fatalf("targets = %q, want none once the table forgot b", got)
	}
}

// targetKeys lists the rejoiner's targets, sorted, space-separated.
func targetKeys(r *rejoiner) string {
	keys := slices.Sorted(maps.Keys(r.targets))
	return strings.Join(keys, " ")
}
