package raftstore

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// The cluster API: the Raft configuration (who votes, who only replicates)
// and this node's Raft status, in raftstore's own types. Callers never see
// the raft engine; its errors come back as raftstore's sentinels
// (ErrNotLeader: ask the leader; ErrShuttingDown; ...).

// Suffrage is whether a server votes in elections and commits.
type Suffrage uint8

const (
	// Voter votes and counts towards the quorum.
	Voter Suffrage = iota
	// Nonvoter receives the log but does not vote.
	Nonvoter
)

// String is "voter" or "nonvoter", as the Status API reports it.
func (s Suffrage) String() string {
	if s == Voter {
		return "voter"
	}
	return "nonvoter"
}

// Server is one member of the Raft configuration.
type Server struct {
	// ID is the agent's name.
	ID string
	// Address is its Raft transport address.
	Address  string
	Suffrage Suffrage
}

// Servers returns the latest Raft configuration (committed or not), in
// the configuration's order.
func (s *Store) Servers() ([]Server, error) {
	if s.raft == nil {
		return nil, fmt.Errorf("%w: raft is not running", ErrShuttingDown)
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("read raft configuration: %w", RaftError(err))
	}
	return serversOf(f.Configuration()), nil
}

// serversOf lists a raft configuration's servers in its order.
func serversOf(cfg raft.Configuration) []Server {
	out := make([]Server, 0, len(cfg.Servers))
	for _, srv := range cfg.Servers {
		sf := Voter
		if srv.Suffrage != raft.Voter {
			sf = Nonvoter
		}
		out = append(out, Server{ID: string(srv.ID), Address: string(srv.Address), Suffrage: sf})
	}
	return out
}

// serverIDAt returns the id of the server at Raft address addr in the
// latest configuration (raft names a peer by its address in some log
// lines). It does not wait on raft: the configuration is read atomically.
func (s *Store) serverIDAt(addr string) (string, bool) {
	for _, srv := range s.raft.GetConfiguration().Configuration().Servers {
		if string(srv.Address) == addr {
			return string(srv.ID), true
		}
	}
	return "", false
}

// AddVoter makes server id at Raft address addr a voter: it adds it, or
// promotes it, or updates its address. Only the leader may; others get
// ErrNotLeader.
func (s *Store) AddVoter(ctx context.Context, id, addr string) error {
	if err := checkServer(id, addr); err != nil {
		return err
	}
	err := s.waitChange(ctx, func(timeout time.Duration) raft.Future {
		return s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
	})
	if err != nil {
		return fmt.Errorf("add voter %s: %w", id, err)
	}
	return nil
}

// AddNonvoter adds server id at Raft address addr as a nonvoter, or updates
// its address; a voter stays a voter. Only the leader may.
func (s *Store) AddNonvoter(ctx context.Context, id, addr string) error {
	if err := checkServer(id, addr); err != nil {
		return err
	}
	err := s.waitChange(ctx, func(timeout time.Duration) raft.Future {
		return s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
	})
	if err != nil {
		return fmt.Errorf("add nonvoter %s: %w", id, err)
	}
	return nil
}

// DemoteVoter makes voter id a nonvoter; a nonvoter, or a server not in
// the configuration, is left as it is. Only the leader may.
func (s *Store) DemoteVoter(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("%w: server id is empty", ErrInvalidArgument)
	}
	err := s.waitChange(ctx, func(timeout time.Duration) raft.Future {
		return s.raft.DemoteVoter(raft.ServerID(id), 0, timeout)
	})
	if err != nil {
		return fmt.Errorf("demote voter %s: %w", id, err)
	}
	return nil
}

// RemoveServer takes server id out of the Raft configuration. Removing a
// server that is not in it changes nothing. Only the leader may.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("%w: server id is empty", ErrInvalidArgument)
	}
	err := s.waitChange(ctx, func(timeout time.Duration) raft.Future {
		return s.raft.RemoveServer(raft.ServerID(id), 0, timeout)
	})
	if err != nil {
		return fmt.Errorf("remove %s from raft: %w", id, err)
	}
	return nil
}

// TransferLeadership hands leadership to the most up-to-date other voter
// and waits until the handover has finished or failed. Only the leader
// may; with no other voter it fails.
func (s *Store) TransferLeadership(ctx context.Context) error {
	if s.raft == nil {
		return fmt.Errorf("%w: raft is not running", ErrShuttingDown)
	}
	if err := s.wait(ctx, s.raft.LeadershipTransfer()); err != nil {
		return fmt.Errorf("transfer leadership: %w", RaftError(err))
	}
	return nil
}

func checkServer(id, addr string) error {
	if id == "" {
		return fmt.Errorf("%w: server id is empty", ErrInvalidArgument)
	}
	if addr == "" {
		return fmt.Errorf("%w: raft address of server %s is empty", ErrInvalidArgument, id)
	}
	return nil
}

// waitChange starts a configuration change, bounded as Apply bounds a
// write (ctx's deadline, else ApplyTimeout), and waits for it.
func (s *Store) waitChange(ctx context.Context, change func(timeout time.Duration) raft.Future) error {
	timeout := s.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return context.DeadlineExceeded
		}
	}
	select {
	case <-s.stop:
		return ErrShuttingDown
	default:
	}
	if s.raft == nil {
		return fmt.Errorf("%w: raft is not running", ErrShuttingDown)
	}
	return RaftError(s.wait(ctx, change(timeout)))
}

// State is a Raft node's role.
type State uint8

const (
	Follower State = iota
	Candidate
	Leader
	// Shutdown: Raft has stopped (the store closed, or this node was
	// removed and shut itself down).
	Shutdown
)

// States lists every State, in order.
var States = []State{Follower, Candidate, Leader, Shutdown}

// String is the state's name as raft spells it ("Leader", ...).
func (s State) String() string {
	switch s {
	case Follower:
		return "Follower"
	case Candidate:
		return "Candidate"
	case Leader:
		return "Leader"
	case Shutdown:
		return "Shutdown"
	}
	return "Unknown"
}

func stateFrom(s raft.RaftState) State {
	switch s {
	case raft.Candidate:
		return Candidate
	case raft.Leader:
		return Leader
	case raft.Shutdown:
		return Shutdown
	}
	return Follower
}

// Status is this node's view of Raft at one moment.
type Status struct {
	State State
	Term  uint64
	// LeaderID and LeaderAddr (Raft address) are empty while no leader is
	// known.
	LeaderID   string
	LeaderAddr string
	// LastLogIndex is the last entry in this node's log; CommitIndex the
	// last it knows committed; AppliedIndex the last applied to its replica.
	LastLogIndex uint64
	CommitIndex  uint64
	AppliedIndex uint64
	// CommitSeen is the highest index it knows committed, from anyone
	// (Store.CommitSeen): a peer that restarts asks for it.
	CommitSeen uint64
	// LastContact is when this follower last heard from a leader (zero if
	// never, or on the leader itself).
	LastContact time.Time
	// Stopped says why this agent stopped its Raft node while it runs on
	// (a failed fsync of its log) and what to do; empty otherwise.
	Stopped string
	// CutOff says why this agent is cut off from the leader at the last
	// look (contact.go); empty while it is in contact.
	CutOff string
}

// Status returns this node's Raft status; before Open it is Shutdown.
func (s *Store) Status() Status {
	if s.raft == nil {
		return Status{State: Shutdown}
	}
	addr, id := s.raft.LeaderWithID()
	st := Status{
		State:        stateFrom(s.raft.State()),
		Term:         s.raft.CurrentTerm(),
		LeaderID:     string(id),
		LeaderAddr:   string(addr),
		LastLogIndex: s.raft.LastIndex(),
		CommitIndex:  s.raft.CommitIndex(),
		AppliedIndex: s.raft.AppliedIndex(),
	}
	// A leader counts its own copy of an entry from when raft stored it,
	// before its fsync (syncahead.go): it tells a restarting peer
	// (commit_seen) only what is committed on disks.
	commit := st.CommitIndex
	if st.State == Leader && s.logs != nil && s.logs.ahead != nil {
		commit = min(commit, s.logs.ahead.durableIndex())
	}
	st.CommitSeen = max(commit, s.CommitSeen())
	if st.State != Leader {
		st.LastContact = s.raft.LastContact()
	}
	st.Stopped = s.StoppedBy()
	if err := s.cutOffNow(); err != nil {
		st.CutOff = err.Error()
	}
	return st
}

// StoppedBy says why this agent stopped its Raft node while it runs on (a
// failed fsync of its log, or an append it refused) and what to do; ""
// while the node runs or was stopped by Close.
func (s *Store) StoppedBy() string {
	if s.logs == nil {
		return ""
	}
	if err := s.logs.ahead.failure(); err != nil {
		return fmt.Sprintf("fsync of the Raft log failed (%v): check the disk, then restart the agent", err)
	}
	if err := s.writeFailed.Load(); err != nil {
		return fmt.Sprintf("the Raft log refused to append to it (%v): check the disk, then restart the agent", *err)
	}
	return ""
}

// LastContactAge is how long ago this follower heard from the leader: 0 on
// the leader, and false when it never has.
func (st Status) LastContactAge(now time.Time) (time.Duration, bool) {
	if st.State == Leader {
		return 0, true
	}
	if st.LastContact.IsZero() {
		return 0, false
	}
	return now.Sub(st.LastContact), true
}
