package raftstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/monotime"
)

// openCluster starts n stores on loopback, n1 bootstrapping and adding
// the others as voters, and returns them once every one has a leader.
// configure, when given, adjusts each store's configuration (i from 0).
func openCluster(t testing.TB, n int, configure ...func(i int, cfg *Config)) []*Store {
	t.Helper()
	return openClusterOf(t, n, nil, configure...)
}

// openClusterOf is openCluster with beforeOpen, when not nil, called on
// each store between New and Open.
func openClusterOf(t testing.TB, n int, beforeOpen func(i int, s *Store), configure ...func(i int, cfg *Config)) []*Store {
	t.Helper()
	log := testLogger(t, slog.LevelWarn)
	stores := make([]*Store, n)
	for i := range stores {
		cfg := testStoreConfig(t, t.TempDir(), slog.LevelWarn)
		cfg.NodeID = fmt.Sprintf("n%d", i+1)
		cfg.Bootstrap = i == 0
		cfg.Logger = log
		for _, f := range configure {
			f(i, &cfg)
		}
		s := New(cfg)
		if beforeOpen != nil {
			beforeOpen(i, s)
		}
		if err := s.Open(); err != nil {
			t.Fatalf("open %s: %v", cfg.NodeID, err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	eventually(t, 10*time.Second, "n1 leads", stores[0].IsLeader)
	for _, s := range stores[1:] {
		addVoter(t, stores, s)
	}
	for _, s := range stores {
		if err := s.WaitLeader(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	// A voter's addition commits once a quorum has it, and a follower that
	// has not yet stored it refuses the votes of a candidate its own
	// configuration lacks: were the leader lost now, the two followers
	// could not elect one another. Tests that take the leader away start
	// from a cluster every member of which knows all the others.
	eventually(t, 20*time.Second, "every store knows all voters", func() bool {
		for _, s := range stores {
			servers, err := s.Servers()
			if err != nil || len(servers) != n {
				return false
			}
		}
		return true
	})
	return stores
}

// addVoter adds s as a voter through whichever store leads. With the
// tests' 100 ms lease a loaded machine can make the leader step down
// while the change commits: the change is then asked of the next leader.
// joinNonVoter opens a store n4 with staleReadBound (closed at cleanup),
// runs before on it (nil: nothing), has the leader of stores add it as a
// non-voter, and waits until it is in contact with the leader (its
// monitor looks every contactPoll).
func joinNonVoter(t testing.TB, stores []*Store, staleReadBound time.Duration, before func(*Store)) *Store {
	t.Helper()
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelWarn)
	cfg.NodeID, cfg.Bootstrap, cfg.StaleReadBound = "n4", false, staleReadBound
	s := New(cfg)
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if before != nil {
		before(s)
	}
	eventually(t, 20*time.Second, "n4 added as a non-voter", func() bool {
		l := leaderOf(t, stores)
		return l.raft.AddNonvoter(raft.ServerID("n4"), raft.ServerAddress(s.RaftAddr()), 0, 10*time.Second).Error() == nil
	})
	eventually(t, 10*time.Second, "n4 in contact with a leader", func() bool { return !s.CutOff() })
	return s
}

func addVoter(t testing.TB, stores []*Store, s *Store) {
	t.Helper()
	eventually(t, 20*time.Second, "add voter "+s.cfg.NodeID, func() bool {
		for _, l := range stores {
			if !l.IsLeader() {
				continue
			}
			err := l.raft.AddVoter(raft.ServerID(s.cfg.NodeID), raft.ServerAddress(s.RaftAddr()), 0, 10*time.Second).Error()
			switch {
			case err == nil:
				return true
			case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrNotLeader):
				t.Logf("add voter %s through %s: %v; asking the next leader", s.cfg.NodeID, l.cfg.NodeID, err)
				return false
			default:
				t.Fatalf("add voter %s: %v", s.cfg.NodeID, err)
			}
		}
		return false
	})
}

// transferLeadership moves leadership away from old and returns the new
// leader once it is past its barrier (it serves consistent reads). On a
// loaded machine a transfer can time out, or leadership can move (or come
// back) by itself meanwhile: the transfer is asked again while old leads.
func transferLeadership(t *testing.T, stores []*Store, old *Store) *Store {
	t.Helper()
	var leader *Store
	eventually(t, 20*time.Second, "a new leader past its barrier", func() bool {
		for _, s := range stores {
			if s != old && s.CheckRead(pb.Consistency_CONSISTENT) == nil {
				leader = s
				return true
			}
		}
		if old.IsLeader() {
			if err := old.raft.LeadershipTransfer().Error(); err != nil {
				t.Logf("leadership transfer from %s: %v; asking again", old.cfg.NodeID, err)
			}
		}
		return false
	})
	return leader
}

// applyThroughLeader applies cmd through whichever store leads, and again
// through the next leader when leadership moves while it commits (cmd
// may then have been applied already: it must be idempotent).
func applyThroughLeader(t *testing.T, stores []*Store, cmd *pb.Command) {
	t.Helper()
	eventually(t, 20*time.Second, "a leader to apply a command", func() bool {
		for _, s := range stores {
			if !s.IsLeader() {
				continue
			}
			if _, err := s.Apply(context.Background(), cmd); err != nil {
				t.Logf("apply through %s: %v; asking the next leader", s.cfg.NodeID, err)
				return false
			}
			return true
		}
		return false
	})
}

func leaderOf(t testing.TB, stores []*Store) *Store {
	t.Helper()
	var leader *Store
	eventually(t, 10*time.Second, "a leader", func() bool {
		for _, s := range stores {
			if s.IsLeader() {
				leader = s
				return true
			}
		}
		return false
	})
	return leader
}

// TestFollowerWaitForLeaderCommitAfterLeaderChange: after a leader change
// and no command since, the new leader's commit index holds only its no-op
// and barrier; a follower waiting until it has applied that index must not
// wait for a command that may never come.
func TestFollowerWaitForLeaderCommitAfterLeaderChange(t *testing.T) {
	stores := openCluster(t, 3)
	for i := range 5 {
		applyThroughLeader(t, stores, registerCmd(testInstance("api", fmt.Sprint(i), "n1")))
	}
	leader := transferLeadership(t, stores, leaderOf(t, stores))
	commit := leader.raft.AppliedIndex()
	for _, s := range stores {
		if s == leader {
			continue
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err := s.FSM().WaitRevision(ctx, commit)
		cancel()
		if err != nil {
			t.Errorf("%s waiting for the leader's commit index %d: %v (its revision is %d)",
				s.cfg.NodeID, commit, err, s.FSM().Revision())
		}
	}
	// The state did not change: only the revision moved.
	for _, s := range stores {
		if insts, _ := s.FSM().AllInstances(); len(insts) != 5 {
			t.Errorf("%s has %d instances, want 5", s.cfg.NodeID, len(insts))
		}
	}
}

// TestSkippableStopsAtEntriesTheFSMApplies: the revision moves only over
// entries the FSM never sees, never over a command or configuration raft
// has handed to the FSM but the FSM may not have applied yet.
func TestSkippableStopsAtEntriesTheFSMApplies(t *testing.T) {
	logs := raft.NewInmemStore()
	types := []raft.LogType{raft.LogNoop, raft.LogBarrier, raft.LogCommand, raft.LogNoop, raft.LogBarrier, raft.LogConfiguration, raft.LogBarrier}
	for i, typ := range types {
		if err := logs.StoreLog(&raft.Log{Index: uint64(10 + i), Type: typ}); err != nil {
			t.Fatal(err)
		}
	}
	// Indexes: 10 noop, 11 barrier, 12 command, 13 noop, 14 barrier, 15 configuration, 16 barrier.
	for _, tc := range []struct{ from, applied, want uint64 }{
		{9, 16, 11},  // stops before the command at 12
		{9, 10, 10},  // not past what raft applied
		{12, 16, 14}, // stops before the configuration at 15
		{15, 16, 16},
		{16, 16, 16},
		{16, 20, 16}, // entries not in the log (yet, or compacted)
		{5, 16, 5},   // 6 is compacted away: nothing known
	} {
		if got := skippableTo(logs, tc.from, tc.applied); got != tc.want {
			t.Errorf("skippableTo(from %d, applied %d) = %d, want %d", tc.from, tc.applied, got, tc.want)
		}
	}

	// The FSM moves only from the revision the caller checked.
	f := NewFSM(16)
	f.Apply(commandLog(t, 12, registerCmd(testInstance("api", "1", "n1"))))
	f.skipTo(11, 14)
	if got := f.Revision(); got != 12 {
		t.Fatalf("skipTo from a stale revision moved it to %d", got)
	}
	f.skipTo(12, 14)
	if got := f.Revision(); got != 14 {
		t.Fatalf("skipTo(12, 14): revision %d, want 14", got)
	}
	if err := f.WaitRevision(t.Context(), 14); err != nil {
		t.Fatal(err)
	}
}

// TestStoreDefaultReadAfterRestartSeesTheReplayedLog: right after a
// restart, a DEFAULT read is either refused (still replaying) or sees
// every write acknowledged before the restart, never fewer. STALE reads
// may see fewer.
func TestStoreDefaultReadAfterRestartSeesTheReplayedLog(t *testing.T) {
	const n = 3000
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelWarn)
	cfg.NoSync = true
	cfg.SnapshotThreshold = 1 << 20 // replay everything from the log
	s := openStore(t, New(cfg))
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				mustStoreApply(t, s, registerCmd(testInstance("api", fmt.Sprint(i), "n1")))
			}
		}()
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := New(cfg)
	if err := s2.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	reads, refused := 0, 0
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := s2.CheckRead(pb.Consistency_DEFAULT)
		if err != nil {
			if !errors.Is(err, ErrStaleRead) {
				t.Fatalf("DEFAULT read refused with %v, want ErrStaleRead", err)
			}
			refused++
		} else {
			reads++
			if insts, rev := s2.FSM().Instances("api"); len(insts) < n {
				t.Fatalf("DEFAULT read %d after restart saw %d instances at revision %d, want %d", reads, len(insts), rev, n)
			}
		}
		if reads >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d DEFAULT reads allowed within 20s of the restart (%d refused)", reads, refused)
		}
	}
	t.Logf("%d reads refused while replaying", refused)
}

// idleStores sets every store's idle poll of skippable entries to an hour
// (tests of what kicks the tracker), before Open.
func idleStores(_ int, s *Store) { s.appliedIdle = time.Hour }

// waitTrackerIdle waits until s's tracker has stopped looking often: its
// busy period over and no look for 100 ms.
func waitTrackerIdle(t *testing.T, s *Store) {
	t.Helper()
	eventually(t, 10*time.Second, s.cfg.NodeID+"'s applied tracker to idle", func() bool {
		if monotime.Now() < s.appliedBusyUntil.Load() {
			return false
		}
		n := s.appliedLooks.Load()
		time.Sleep(100 * time.Millisecond)
		return s.appliedLooks.Load() == n
	})
}

// TestIdleStoreLooksForSkippableEntriesOnceASecond: with nothing written,
// the store's tracker of entries the FSM never sees wakes about once a
// second, not every 10 ms.
func TestIdleStoreLooksForSkippableEntriesOnceASecond(t *testing.T) {
	stores := openCluster(t, 1)
	s := stores[0]
	waitTrackerIdle(t, s)
	n := s.appliedLooks.Load()
	time.Sleep(2500 * time.Millisecond)
	if looks := s.appliedLooks.Load() - n; looks > 4 {
		t.Fatalf("an idle store looked %d times in 2.5s for entries to move its revision over, want at most 4 (idle poll %s)", looks, s.appliedIdle)
	}
}

// TestWaitingReaderWakesTheIdleTracker: a reader that waits for a
// revision the replica has not reached makes the tracker look at once,
// even with its idle poll at an hour.
func TestWaitingReaderWakesTheIdleTracker(t *testing.T) {
	stores := openClusterOf(t, 1, idleStores)
	s := stores[0]
	waitTrackerIdle(t, s)
	n := s.appliedLooks.Load()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	s.FSM().WaitRevision(ctx, s.FSM().Revision()+1000) // never reached: ends with ctx
	eventually(t, 5*time.Second, "the tracker to look again", func() bool { return s.appliedLooks.Load() > n+1 })
}

// TestFollowersReachANewLeadersNoOpWithTheirTrackersIdle: the trackers of
// all three stores idle (poll at an hour), a leadership change makes them
// look: every store reaches the new leader's applied index (its no-op
// and barrier) without a write and without raft's commit timeout.
func TestFollowersReachANewLeadersNoOpWithTheirTrackersIdle(t *testing.T) {
	stores := openClusterOf(t, 3, idleStores, longCommitTimeout)
	applyThroughLeader(t, stores, registerCmd(testInstance("api", "0", "n1")))
	for _, s := range stores {
		waitTrackerIdle(t, s)
	}
	leader := transferLeadership(t, stores, leaderOf(t, stores))
	eventually(t, 3*time.Second, "the new leader's revision to cover its barrier", func() bool {
		return leader.FSM().Revision() >= leader.raft.AppliedIndex()
	})
	applied := leader.FSM().Revision()
	for _, s := range stores {
		eventually(t, 3*time.Second, s.cfg.NodeID+" at the new leader's revision", func() bool { return s.FSM().Revision() >= applied })
	}
}
