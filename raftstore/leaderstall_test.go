package raftstore

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/instcodec"
)

// leader returns the store of c that leads, and its index.
func (c *applyHookedCluster) leader(t *testing.T) (*Store, int) {
	leader := leaderOf(t, c.stores)
	for i, s := range c.stores {
		if s == leader {
			return s, i
		}
	}
	t.Fatal("no leader")
	return nil, 0
}

// stall has store i's replica stop applying: its next batch waits, once
// decoded, until the returned function is called (at the latest when the
// test ends).
func (c *applyHookedCluster) stall(t *testing.T, i int) (release func()) {
	held := make(chan struct{})
	hook := func() { <-held }
	c.hooks[i].Store(&hook)
	var once sync.Once
	release = func() {
		once.Do(func() {
			c.hooks[i].Store(nil)
			close(held)
		})
	}
	t.Cleanup(release)
	return release
}

// fsmQueue is the capacity of raft's queue of committed batches to the
// FSM (hashicorp/raft's fsmMutateCh).
const fsmQueue = 128

// fillFSMQueue proposes entries on s, a leader whose replica applies
// nothing, one commit at a time, until raft's queue to the FSM is full
// and its leader loop waits to hand the next committed batch over: from
// then on raft's main loop takes nothing (no leadership transfer, no
// vote, no step-down), while its replication goroutines go on sending
// heartbeats.
func fillFSMQueue(t *testing.T, s *Store) {
	t.Helper()
	pending := func() int {
		n, _ := strconv.Atoi(s.raft.Stats()["fsm_pending"])
		return n
	}
	commitOne := func(i int) {
		if !s.IsLeader() {
			t.Fatalf("%s stopped leading before raft's queue to its FSM was full: the test needs a leader whose raft loop is stuck", s.cfg.NodeID)
		}
		b, err := instcodec.EncodeCommand(registerCmd(testInstance("fill", strconv.Itoa(i), "n1")))
		if err != nil {
			t.Fatal(err)
		}
		commit := s.raft.CommitIndex()
		s.raft.Apply(b, time.Second) // applied once the replica applies again
		eventually(t, 10*time.Second, fmt.Sprintf("%s to commit past %d", s.cfg.NodeID, commit), func() bool {
			return s.raft.CommitIndex() > commit
		})
	}
	i := 0
	for ; pending() < fsmQueue; i++ {
		commitOne(i)
	}
	commitOne(i) // its batch finds the queue full
}

// writeThroughOther applies a registration through a store of stores other
// than stalled that leads, and reports whether it was applied.
func writeThroughOther(stores []*Store, stalled *Store, id string) (leader *Store, ok bool) {
	for _, s := range stores {
		if s == stalled || !s.IsLeader() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := s.Apply(ctx, registerCmd(testInstance("after", id, "n2")))
		return s, err == nil
	}
	return nil, false
}

// TestALeaderWhoseReplicaStopsApplyingLetsAnotherLead: a leader whose
// replica applies nothing while its Raft goes on committing answers no
// write; once its revision has not moved for StaleReadBound it hands
// leadership on, and when raft cannot (its main loop waits on a full
// queue to the FSM) it stops sending AppendEntries and heartbeats as
// leader, so that the followers elect one of themselves; it is cut off
// meanwhile. Once its replica applies again it follows the new leader,
// applies everything, and its apply hash agrees with the others'.
func TestALeaderWhoseReplicaStopsApplyingLetsAnotherLead(t *testing.T) {
	cases := []struct {
		name string
		// fill: fill raft's queue to the stalled FSM too.
		fill bool
	}{
		{name: "raft's loop runs"},
		{name: "raft's queue to the replica is full", fill: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const bound = 3 * time.Second
			c := openApplyHookedCluster(t, bound)
			stalled, i := c.leader(t)
			inContact(t, stalled)
			release := c.stall(t, i)
			stopWriting := keepWriting(t, c.stores, 100*time.Millisecond)
			if tc.fill {
				fillFSMQueue(t, stalled)
			}

			var leader *Store
			eventually(t, 30*time.Second, "a store other than "+stalled.cfg.NodeID+" to lead and apply a write", func() bool {
				var ok bool
				leader, ok = writeThroughOther(c.stores, stalled, "1")
				return ok
			})
			eventually(t, 10*time.Second, stalled.cfg.NodeID+" cut off while its replica applies nothing", func() bool {
				return stallCause.MatchString(fmt.Sprint(stalled.cutOffNow()))
			})
			if tc.fill && !stalled.transport.fence.up() {
				t.Fatalf("%s's raft could not hand its leadership on, and the fence is down while its replica applies nothing", stalled.cfg.NodeID)
			}

			release()
			stopWriting()
			var rev uint64
			eventually(t, 30*time.Second, "a last write through the new leader", func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				var err error
				rev, err = leader.Apply(ctx, registerCmd(testInstance("after", "last", "n2")))
				if err != nil {
					leader = leaderOf(t, c.stores)
				}
				return err == nil
			})
			eventually(t, 30*time.Second, stalled.cfg.NodeID+" following, and every replica at the last write", func() bool {
				if stalled.IsLeader() {
					return false
				}
				for _, s := range c.stores {
					if s.fsm.Revision() < rev {
						return false
					}
				}
				return true
			})
			want, ok := leader.fsm.ApplyHash(rev)
			if !ok {
				t.Fatalf("%s does not know its apply hash at %d", leader.cfg.NodeID, rev)
			}
			for _, s := range c.stores {
				if got, ok := s.fsm.ApplyHash(rev); !ok || got != want {
					t.Errorf("%s's apply hash at %d = %x (known %v), %s's is %x", s.cfg.NodeID, rev, got, ok, leader.cfg.NodeID, want)
				}
			}
			inContact(t, stalled)
		})
	}
}

// TestALeaderBehindButApplyingKeepsLeading: a leader whose replica
// applies slowly, behind its commit index for longer than StaleReadBound
// but moving all along, keeps its leadership and its contact, and never
// fences itself.
func TestALeaderBehindButApplyingKeepsLeading(t *testing.T) {
	const bound = 1500 * time.Millisecond
	c := openApplyHookedCluster(t, bound)
	slow := func() { time.Sleep(100 * time.Millisecond) }
	for i := range c.hooks {
		c.hooks[i].Store(&slow)
		t.Cleanup(func() { c.hooks[i].Store(nil) })
	}
	for range 6 {
		keepWriting(t, c.stores, time.Millisecond)
	}

	// The leader falls behind and stays so, applying one batch a tenth
	// of a second while its Raft commits more.
	var (
		leader      *Store
		contact     context.Context
		behindSince time.Time
		from        uint64
	)
	eventually(t, 60*time.Second, fmt.Sprintf("the leader behind its commit index for twice stale_read_bound (%s)", bound), func() bool {
		l := leaderOf(t, c.stores)
		if l != leader { // a new leader (elections come on a loaded machine): look at it afresh
			leader, contact, behindSince = l, inContact(t, l), time.Time{}
			return false
		}
		if err := context.Cause(contact); err != nil {
			t.Fatalf("%s, behind but applying, lost contact: %v", leader.cfg.NodeID, err)
		}
		if leader.transport.fence.up() {
			t.Fatalf("%s, behind but applying, raised its fence", leader.cfg.NodeID)
		}
		applied := leader.fsm.Revision()
		if applied >= leader.raft.CommitIndex() {
			behindSince = time.Time{}
			return false
		}
		if behindSince.IsZero() {
			behindSince, from = time.Now(), applied
		}
		return time.Since(behindSince) > 2*bound
	})
	if applied := leader.fsm.Revision(); applied <= from {
		t.Fatalf("%s applied nothing while behind (revision %d): the test needs a replica that moves", leader.cfg.NodeID, applied)
	}
	// A leader counted stalled is cut off before it hands its leadership
	// on or fences itself.
	if err := context.Cause(contact); err != nil {
		t.Fatalf("%s, behind but applying, lost contact: %v", leader.cfg.NodeID, err)
	}
}
