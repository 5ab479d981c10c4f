package raftstore

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSingleStoreServersAndStatus(t *testing.T) {
	s := openStore(t, New(testStoreConfig(t, t.TempDir(), slog.LevelWarn)))
	servers, err := s.Servers()
	if err != nil {
		t.Fatal(err)
	}
	if want := []Server{{ID: "n1", Address: s.RaftAddr(), Suffrage: Voter}}; !slices.Equal(servers, want) {
		t.Fatalf("Servers = %+v, want %+v", servers, want)
	}
	rev := mustStoreApply(t, s, registerCmd(testInstance("api", "0", "n1")))
	st := s.Status()
	if st.State != Leader || st.State.String() != "Leader" {
		t.Errorf("State = %v, want Leader", st.State)
	}
	if st.LeaderID != "n1" || st.LeaderAddr != s.RaftAddr() {
		t.Errorf("leader = %q at %q, want n1 at %q", st.LeaderID, st.LeaderAddr, s.RaftAddr())
	}
	if st.Term == 0 {
		t.Errorf("Term = 0 on a leader")
	}
	if st.LastLogIndex < rev || st.CommitIndex < rev {
		t.Errorf("indexes last %d commit %d, want both >= the write's revision %d", st.LastLogIndex, st.CommitIndex, rev)
	}
	// Raft records the applied index just after the write's answer.
	eventually(t, 10*time.Second, "applied index reaches the write", func() bool { return s.Status().AppliedIndex >= rev })
	if age, ok := st.LastContactAge(time.Now()); !ok || age != 0 {
		t.Errorf("LastContactAge on the leader = %v, %v; want 0, true", age, ok)
	}

	// Bad input is refused before Raft sees it.
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"voter without id", s.AddVoter(t.Context(), "", "127.0.0.1:1"), "server id"},
		{"voter without address", s.AddVoter(t.Context(), "n2", ""), "raft address of server n2"},
		{"nonvoter without address", s.AddNonvoter(t.Context(), "n2", ""), "raft address of server n2"},
		{"remove without id", s.RemoveServer(t.Context(), ""), "server id"},
	} {
		if tc.err == nil || !errors.Is(tc.err, ErrInvalidArgument) || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalidArgument naming %q", tc.name, tc.err, tc.want)
		}
	}
	// Alone, there is nobody to hand leadership to.
	if err := s.TransferLeadership(t.Context()); err == nil {
		t.Errorf("TransferLeadership with no other voter succeeded")
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st.State != Shutdown {
		t.Errorf("State after Close = %v, want Shutdown", st.State)
	}
	if err := s.AddVoter(t.Context(), "n2", "127.0.0.1:1"); !errors.Is(err, ErrShuttingDown) {
		t.Errorf("AddVoter after Close = %v, want ErrShuttingDown", err)
	}
}

func TestClusterMembershipChanges(t *testing.T) {
	stores := openCluster(t, 3)
	leader := leaderOf(t, stores)
	var follower *Store
	for _, s := range stores {
		if s != leader {
			follower = s
			break
		}
	}
	ids := func(s *Store) map[string]Suffrage {
		servers, err := s.Servers()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]Suffrage{}
		for _, srv := range servers {
			out[srv.ID] = srv.Suffrage
		}
		return out
	}
	if got := ids(leader); len(got) != 3 || got["n1"] != Voter || got["n2"] != Voter || got["n3"] != Voter {
		t.Fatalf("Servers = %v, want n1-n3 voters", got)
	}

	// Only the leader changes the configuration.
	if err := follower.AddNonvoter(t.Context(), "n9", "127.0.0.1:1"); !errors.Is(err, ErrNotLeader) {
		t.Errorf("AddNonvoter on a follower = %v, want ErrNotLeader", err)
	}
	if err := follower.RemoveServer(t.Context(), "n9"); !errors.Is(err, ErrNotLeader) {
		t.Errorf("RemoveServer on a follower = %v, want ErrNotLeader", err)
	}
	if err := follower.TransferLeadership(t.Context()); !errors.Is(err, ErrNotLeader) {
		t.Errorf("TransferLeadership on a follower = %v, want ErrNotLeader", err)
	}
	st := follower.Status()
	if st.State != Follower || st.LeaderID != leader.cfg.NodeID {
		t.Errorf("follower Status = %+v, want a follower of %s", st, leader.cfg.NodeID)
	}
	eventually(t, 10*time.Second, "the follower hears from the leader", func() bool {
		_, ok := follower.Status().LastContactAge(time.Now())
		return ok
	})

	// Demote the follower to a nonvoter, promote it back, remove it.
	fid, faddr := follower.cfg.NodeID, follower.RaftAddr()
	if err := leader.AddNonvoter(t.Context(), fid, faddr); err != nil {
		t.Fatal(err)
	}
	if got := ids(leader)[fid]; got != Voter {
		t.Errorf("AddNonvoter of a voter made it %v; a voter stays a voter", got)
	}
	if err := leader.RemoveServer(t.Context(), fid); err != nil {
		t.Fatal(err)
	}
	if _, ok := ids(leader)[fid]; ok {
		t.Fatalf("%s still in the configuration after RemoveServer", fid)
	}
	if err := leader.RemoveServer(t.Context(), fid); err != nil {
		t.Errorf("removing a server that is gone: %v, want nil", err)
	}
	if err := leader.AddNonvoter(t.Context(), fid, faddr); err != nil {
		t.Fatal(err)
	}
	if got, ok := ids(leader)[fid]; !ok || got != Nonvoter {
		t.Fatalf("after AddNonvoter %s is %v (in config: %v), want nonvoter", fid, got, ok)
	}
	if err := leader.AddVoter(t.Context(), fid, faddr); err != nil {
		t.Fatal(err)
	}
	if got := ids(leader)[fid]; got != Voter {
		t.Fatalf("after AddVoter %s is %v, want voter", fid, got)
	}

	// Hand leadership over; the old leader follows the new one.
	mustStoreApply(t, leader, registerCmd(testInstance("api", "0", "n1")))
	if err := leader.TransferLeadership(t.Context()); err != nil {
		t.Fatalf("TransferLeadership: %v", err)
	}
	eventually(t, 10*time.Second, "a new leader", func() bool {
		st := leader.Status()
		return st.State == Follower && st.LeaderID != "" && st.LeaderID != leader.cfg.NodeID
	})

	// A configuration change whose deadline has passed is not started.
	ctx, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel()
	if err := leaderOf(t, stores).AddVoter(ctx, "n9", "127.0.0.1:1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("AddVoter past its deadline = %v, want DeadlineExceeded", err)
	}
}

func TestStateNames(t *testing.T) {
	want := []string{"Follower", "Candidate", "Leader", "Shutdown"}
	for i, s := range States {
		if s.String() != want[i] {
			t.Errorf("State %d = %q, want %q", i, s, want[i])
		}
	}
	if Voter.String() != "voter" || Nonvoter.String() != "nonvoter" {
		t.Errorf("suffrage names %q, %q", Voter, Nonvoter)
	}
}
