package raftstore

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// applyHookedCluster is a cluster of three stores, StaleReadBound bound,
// whose FSMs each call their hook, when one is set, after decoding a
// batch and before applying it.
type applyHookedCluster struct {
	stores []*Store
	hooks  []atomic.Pointer[func()]
}

func openApplyHookedCluster(t *testing.T, bound time.Duration) *applyHookedCluster {
	c := &applyHookedCluster{hooks: make([]atomic.Pointer[func()], 3)}
	c.stores = openClusterOf(t, 3, func(i int, s *Store) {
		s.fsm.decoded = func() {
			if hook := c.hooks[i].Load(); hook != nil {
				(*hook)()
			}
		}
	}, func(_ int, cfg *Config) { cfg.StaleReadBound = bound })
	return c
}

// follower returns a store of c that does not lead, and its index.
func (c *applyHookedCluster) follower(t *testing.T) (*Store, int) {
	leader := leaderOf(t, c.stores)
	for i, s := range c.stores {
		if s != leader {
			return s, i
		}
	}
	t.Fatal("no follower")
	return nil, 0
}

// keepWriting applies a registration through the cluster's leader every
// pause until the returned function is called or the test ends, so that
// the leader goes on committing.
func keepWriting(t *testing.T, stores []*Store, pause time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			for _, s := range stores {
				if s.IsLeader() {
					wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
					_, _ = s.Apply(wctx, registerCmd(testInstance("api", strconv.Itoa(i%50), "n1")))
					wcancel()
					break
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(pause):
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// keepFollowing has s hand its leadership on when it leads, and reports
// whether it did: a store a test needs as a follower may win an election
// (elections come often on a loaded machine), and a leader's stall is
// handled as a leader's (leaderStall).
func keepFollowing(t *testing.T, s *Store) bool {
	if !s.IsLeader() {
		return false
	}
	if err := s.raft.LeadershipTransfer().Error(); err != nil {
		t.Logf("%s leads, and must follow: leadership transfer: %v; asking again", s.cfg.NodeID, err)
	}
	return true
}

// inContact waits until s is in contact with a leader and returns the
// context that ends when it is no longer.
func inContact(t *testing.T, s *Store) context.Context {
	t.Helper()
	var ctx context.Context
	var err error
	eventually(t, 20*time.Second, s.cfg.NodeID+" in contact with a leader", func() bool {
		ctx, err = s.LeaderContact()
		return err == nil && ctx.Err() == nil
	})
	return ctx
}

var stallCause = regexp.MustCompile(`this replica stopped applying: applied (\d+), the leader's commit index is (\d+), no progress for `)

// TestAFollowerWhoseReplicaStopsApplyingLosesContact: a follower whose
// Raft goes on receiving the leader's commits while its replica applies
// nothing (an apply waiting for the lock a stuck reader holds, or one
// that hangs) is cut off once its revision has not moved for
// StaleReadBound: its LeaderContact ends with an ErrStaleRead that says
// how far it is behind, so that its watches and sessions move; once it
// applies again it is in contact again.
func TestAFollowerWhoseReplicaStopsApplyingLosesContact(t *testing.T) {
	cases := []struct {
		name string
		// stop stops s's replica applying; the function it returns lets
		// it go on.
		stop func(c *applyHookedCluster, s *Store, i int) (resume func())
	}{
		{name: "a reader holds the replica's lock", stop: func(_ *applyHookedCluster, s *Store, _ int) func() {
			s.fsm.mu.RLock()
			return s.fsm.mu.RUnlock
		}},
		{name: "the apply hangs", stop: func(c *applyHookedCluster, _ *Store, i int) func() {
			held := make(chan struct{})
			hook := func() { <-held }
			c.hooks[i].Store(&hook)
			return func() {
				c.hooks[i].Store(nil)
				close(held)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const bound = time.Second
			c := openApplyHookedCluster(t, bound)
			follower, i := c.follower(t)
			stopWriting := keepWriting(t, c.stores, 100*time.Millisecond)
			contact := inContact(t, follower)

			var once sync.Once
			resume := tc.stop(c, follower, i)
			release := func() { once.Do(resume) }
			t.Cleanup(release)
			eventually(t, 20*time.Second, follower.cfg.NodeID+"'s contact to end while its replica applies nothing", func() bool {
				keepFollowing(t, follower)
				return contact.Err() != nil
			})
			cause := context.Cause(contact)
			if !errors.Is(cause, ErrStaleRead) {
				t.Fatalf("contact ended with %v, want an ErrStaleRead", cause)
			}
			m := stallCause.FindStringSubmatch(cause.Error())
			if m == nil {
				t.Fatalf("contact ended with %q, want it to match %q", cause, stallCause)
			}
			applied, _ := strconv.ParseUint(m[1], 10, 64)
			commit, _ := strconv.ParseUint(m[2], 10, 64)
			if head := follower.fsm.Revision(); applied != head || commit <= applied {
				t.Fatalf("contact ended with %q; the replica has applied %d, and the commit index should be above it", cause, head)
			}
			if _, err := follower.LeaderContact(); !errors.Is(err, ErrStaleRead) {
				t.Fatalf("LeaderContact on the stalled follower = %v, want an ErrStaleRead", err)
			}

			release()
			contact = inContact(t, follower)
			stopWriting()
			if follower.CutOff() {
				t.Fatalf("%s is cut off once it applies again: %v", follower.cfg.NodeID, follower.cutOffNow())
			}
			if contact.Err() != nil {
				t.Fatalf("%s's contact ended once it applies again: %v", follower.cfg.NodeID, context.Cause(contact))
			}
		})
	}
}

// TestAFollowerBehindButApplyingKeepsContact: a follower whose replica
// applies slowly, behind the leader's commit index for longer than
// StaleReadBound but moving all along, stays in contact.
func TestAFollowerBehindButApplyingKeepsContact(t *testing.T) {
	const bound = 1500 * time.Millisecond
	c := openApplyHookedCluster(t, bound)
	follower, i := c.follower(t)
	contact := inContact(t, follower)
	slow := func() { time.Sleep(100 * time.Millisecond) }
	c.hooks[i].Store(&slow)
	t.Cleanup(func() { c.hooks[i].Store(nil) })
	stopWriting := keepWriting(t, c.stores, 40*time.Millisecond)

	// The follower falls behind and stays so, applying one batch a
	// tenth of a second while the leader commits more.
	var behindSince time.Time
	var from uint64
	eventually(t, 60*time.Second, fmt.Sprintf("%s behind the leader's commit index for twice stale_read_bound (%s)", follower.cfg.NodeID, bound), func() bool {
		commit, _ := follower.transport.LeaderCommit()
		applied := follower.fsm.Revision()
		if keepFollowing(t, follower) || applied >= commit {
			behindSince = time.Time{}
			return false
		}
		if behindSince.IsZero() {
			behindSince, from = time.Now(), applied
		}
		return time.Since(behindSince) > 2*bound
	})
	stopWriting()
	if applied := follower.fsm.Revision(); applied <= from {
		t.Fatalf("%s applied nothing while behind (revision %d): the test needs a replica that moves", follower.cfg.NodeID, applied)
	}
	if contact.Err() != nil {
		t.Fatalf("%s, behind but applying, lost contact: %v", follower.cfg.NodeID, context.Cause(contact))
	}
}

// TestApplyStallCountsFromTheLastProgress: a follower's replica counts
// as stalled once it is behind the leader's commit index it knows and
// its revision has not moved for the bound, counted from the last look
// that saw it move or caught up, or from when the process resumed after
// standing still, whichever is later; a leader's the same way, against
// its own commit index.
func TestApplyStallCountsFromTheLastProgress(t *testing.T) {
	const bound = 5 * time.Second
	start := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	type look struct {
		at              time.Duration
		applied, commit uint64
		resumed         time.Duration // when the process last resumed; 0: it never stood still
		stalled         bool
	}
	cases := []struct {
		name  string
		looks []look
	}{
		{name: "caught up for long, then behind for less than the bound", looks: []look{
			{at: 0, applied: 10, commit: 10},
			{at: time.Hour, applied: 10, commit: 10},
			{at: time.Hour + 250*time.Millisecond, applied: 10, commit: 12},
			{at: time.Hour + bound - time.Millisecond, applied: 10, commit: 12},
			{at: time.Hour + bound, applied: 10, commit: 12, stalled: true},
		}},
		{name: "behind and not moving past the bound", looks: []look{
			{at: 0, applied: 10, commit: 12},
			{at: bound - time.Millisecond, applied: 10, commit: 12},
			{at: bound, applied: 10, commit: 14, stalled: true},
		}},
		{name: "behind and moving", looks: []look{
			{at: 0, applied: 10, commit: 20},
			{at: 4 * time.Second, applied: 11, commit: 22},
			{at: 8 * time.Second, applied: 12, commit: 24},
			{at: 12 * time.Second, applied: 13, commit: 26},
		}},
		{name: "stalled, then applying again", looks: []look{
			{at: 0, applied: 10, commit: 12},
			{at: 6 * time.Second, applied: 10, commit: 12, stalled: true},
			{at: 6*time.Second + 250*time.Millisecond, applied: 11, commit: 12},
		}},
		{name: "behind, not moving, while the process stood still", looks: []look{
			{at: 0, applied: 10, commit: 12},
			{at: time.Minute, applied: 10, commit: 12, resumed: time.Minute},
			{at: time.Minute + bound - time.Millisecond, applied: 10, commit: 12, resumed: time.Minute},
			{at: time.Minute + bound, applied: 10, commit: 12, resumed: time.Minute, stalled: true},
		}},
	}
	for _, tc := range cases {
		s := &Store{cfg: Config{StaleReadBound: bound}, fsm: NewFSM(16)}
		for i, l := range tc.looks {
			s.fsm.applied.Store(l.applied) // what Revision reads
			if l.resumed > 0 {
				s.contact.resumedAt = start.Add(l.resumed)
			}
			why := s.applyStall(start.Add(l.at), l.commit)
			if (why != "") != l.stalled {
				t.Errorf("%s, look %d: applyStall = %q, want stalled %v", tc.name, i, why, l.stalled)
			}
			if want := fmt.Sprintf("applied %d, the leader's commit index is %d", l.applied, l.commit); why != "" && !strings.Contains(why, want) {
				t.Errorf("%s, look %d: applyStall = %q, want it to say %q", tc.name, i, why, want)
			}
		}
	}
}
