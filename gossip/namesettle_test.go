package gossip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/zrpcio/zrpc/internal/testwait"
)

// nameTakenCalls records what OnNameTaken was told.
type nameTakenCalls struct {
	mu   sync.Mutex
	errs []error
}

func (c *nameTakenCalls) record(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, err)
}

func (c *nameTakenCalls) got() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.errs...)
}

// TestTwoAgentsUnderOneNameAreSettled: two agents with one name that
// joined at the same time through members that had not heard of the
// other both got in, and members each kept one. Once one of them is in
// the cluster (its meta has the cluster id), the other, still in none,
// hears of it alive under its name past failure detection and is told
// (OnNameTaken) with ErrNameTaken naming the other's address; the agent
// in the cluster never is. Gossip is encrypted: without, OnNameTaken is
// never called (TestNameConflictsSettleNothingWithoutEncryption).
func TestTwoAgentsUnderOneNameAreSettled(t *testing.T) {
	var inCl, outside nameTakenCalls
	key := bytes.Repeat([]byte{7}, 32)
	settling := func(calls *nameTakenCalls, cluster string) func(*Config) {
		return func(c *Config) {
			c.Meta.ClusterID, c.EncryptKey = cluster, key
			c.OnNameTaken = calls.record
			c.nameConflictWait = time.Second
		}
	}
	encrypted := func(c *Config) { c.EncryptKey = key }
	// The x in no cluster hears of the other only by its push/pulls with
	// c, which holds the other: every 5 s with the local profile, with a
	// member picked at random; more often here.
	often := func(mc *memberlist.Config) { mc.PushPullInterval = 500 * time.Millisecond }
	c := startTunedAgent(t, "c", encrypted, often)
	d := startTunedAgent(t, "d", encrypted, often)
	x1 := startTunedAgent(t, "x", settling(&inCl, clusterX), often)
	x2 := startTunedAgent(t, "x", settling(&outside, ""), often)
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
	testwait.ForExplained(t, 60*time.Second, "the x in no cluster to be told its name is taken", func() bool { return len(outside.got()) > 0 }, func() string {
		return fmt.Sprintf("; conflicts counted by the x in no cluster: %d, by the other: %d", x2.Refused()[RefusedNameConflict], x1.Refused()[RefusedNameConflict])
	})
	errs := outside.got()
	if len(errs) != 1 || !errors.Is(errs[0], ErrNameTaken) || !strings.Contains(errs[0].Error(), x1.LocalAddr()) ||
		!strings.Contains(errs[0].Error(), "--name") {
		t.Fatalf("the x in no cluster was told %v, want one ErrNameTaken naming %s and what to do", errs, x1.LocalAddr())
	}
	if got := inCl.got(); len(got) != 0 {
		t.Errorf("the x in the cluster was told %v; it keeps its name", got)
	}
}

// TestNameConflictsSettleOnlyTheAgentInNoCluster: a conflict over this
// agent's name settles it (onNameTaken, once) only when this agent is in
// no cluster, the other is in one, and the conflict has lasted
// conflictWait: an agent restarted empty at a new address hears of its
// old address for seconds only, and two agents in no cluster cannot tell
// which is the duplicate.
func TestNameConflictsSettleOnlyTheAgentInNoCluster(t *testing.T) {
	const wait = 30 * time.Second
	t0 := time.Unix(1_800_000_000, 0)
	inCluster := testMeta("self")
	inCluster.ClusterID = clusterX
	for _, tc := range []struct {
		name     string
		own      string
		other    Meta
		at       []time.Duration
		settleAt int // index into at of the conflict that settles; -1: none
	}{
		{"lasting conflict with an agent in a cluster", "", inCluster, []time.Duration{0, wait / 2, wait, 2 * wait}, 2},
		{"conflict shorter than failure detection", "", inCluster, []time.Duration{0, time.Second, 3 * time.Second}, -1},
		{"two short conflicts a quiet apart", "", inCluster, []time.Duration{0, time.Second, 2*wait + 2*time.Second, 2*wait + 3*time.Second}, -1},
		{"this agent is in the cluster", clusterX, inCluster, []time.Duration{0, wait, 2 * wait}, -1},
		{"neither agent in a cluster", "", testMeta("self"), []time.Duration{0, wait, 2 * wait}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls nameTakenCalls
			d := newDelegate(slog.New(slog.DiscardHandler), "self", nil, func() (string, string) { return tc.own, "" }, newEventQueue())
			d.onNameTaken, d.conflictWait = calls.record, wait
			self, other := fakeNode(t, "self", 7, testMeta("self")), fakeNode(t, "self", 8, tc.other)
			for i, at := range tc.at {
				d.settleNameConflict(self, other, t0.Add(at))
				want := 0
				if tc.settleAt >= 0 && i >= tc.settleAt {
					want = 1
				}
				if got := calls.got(); len(got) != want {
					t.Fatalf("after a conflict at +%s: told %d times (%v), want %d", at, len(got), got, want)
				}
			}
			if errs := calls.got(); len(errs) > 0 && (!errors.Is(errs[0], ErrNameTaken) || !strings.Contains(errs[0].Error(), other.Address())) {
				t.Errorf("told %v, want ErrNameTaken naming %s", errs[0], other.Address())
			}
		})
	}

	// Short conflicts with agents at two addresses (this agent restarted
	// empty at a new address, twice) do not add up.
	{
		var calls nameTakenCalls
		d := newDelegate(slog.New(slog.DiscardHandler), "self", nil, func() (string, string) { return "", "" }, newEventQueue())
		d.onNameTaken, d.conflictWait = calls.record, wait
		self := fakeNode(t, "self", 7, testMeta("self"))
		d.settleNameConflict(self, fakeNode(t, "self", 8, inCluster), t0)
		d.settleNameConflict(self, fakeNode(t, "self", 9, inCluster), t0.Add(wait))
		if got := calls.got(); len(got) != 0 {
			t.Errorf("conflicts with two addresses %s apart told this agent %v", wait, got)
		}
	}

	// A conflict over another member's name never settles this agent.
	var calls nameTakenCalls
	d := newDelegate(slog.New(slog.DiscardHandler), "self", nil, func() (string, string) { return "", "" }, newEventQueue())
	d.onNameTaken, d.conflictWait = calls.record, 0
	m := testMeta("peer")
	m.ClusterID = clusterX
	for range 2 {
		d.NotifyConflict(fakeNode(t, "peer", 7, testMeta("peer")), fakeNode(t, "peer", 8, m))
	}
	if got := calls.got(); len(got) != 0 {
		t.Errorf("a conflict over a member's name told this agent %v", got)
	}
}

// TestNameConflictsSettleNothingWithoutEncryption: without gossip
// encryption members' meta is unauthenticated, and alive messages naming
// an agent with a made-up cluster id from anyone reaching the gossip port
// must not stop it: OnNameTaken is not wired.
func TestNameConflictsSettleNothingWithoutEncryption(t *testing.T) {
	var calls nameTakenCalls
	a := startAgent(t, "a", func(c *Config) { c.OnNameTaken = calls.record })
	if a.delegate.onNameTaken != nil {
		t.Fatal("an agent without gossip encryption would act on conflicts over its name")
	}
	b := startAgent(t, "b", func(c *Config) { c.OnNameTaken = calls.record; c.EncryptKey = bytes.Repeat([]byte{7}, 32) })
	if b.delegate.onNameTaken == nil {
		t.Fatal("an agent with gossip encryption does not act on conflicts over its name")
	}
}
