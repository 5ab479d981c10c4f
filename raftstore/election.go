package raftstore

import (
	"fmt"

	"github.com/hashicorp/raft"
)

// StandIfSoleVoter makes a store that is the only voter of its latest
// configuration stand for election at once, rather than after a heartbeat
// timeout (HeartbeatTimeout to twice that) spent waiting for a leader that
// cannot exist: no other server counts this one as a voter (a
// configuration that adds one is appended to this server's log first, when
// it leads), and no other vote is needed to win. It changes only when the
// election starts, never what it takes to win one: Raft still elects with
// a vote of the configuration's quorum, and reads still wait for the
// leader's barrier. A restarted single-agent cluster, or a newly
// bootstrapped one, thus leads as soon as it is ready to: call it after
// Open, once whatever the leader functions (OnLeader) use is in place.
//
// hashicorp/raft has no call to stand now; a follower re-arms its
// heartbeat timer to fire at once when ReloadConfig lowers the heartbeat
// timeout, and its election goes ahead when no leader has been heard from
// within the timeout, which has never happened since Open. So the timeout
// (and the election timeout with it when they are equal, as raft wants
// it no shorter) is raised by a nanosecond and set back.
func (s *Store) StandIfSoleVoter() error {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("read raft configuration: %w", err)
	}
	var voters []raft.ServerID
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			voters = append(voters, srv.ID)
		}
	}
	if len(voters) != 1 || voters[0] != raft.ServerID(s.cfg.NodeID) || s.raft.State() != raft.Follower {
		return nil
	}
	rc := s.raft.ReloadableConfig()
	rc.HeartbeatTimeout = s.cfg.HeartbeatTimeout + 1
	rc.ElectionTimeout = max(s.cfg.ElectionTimeout, s.cfg.HeartbeatTimeout+1)
	if err := s.raft.ReloadConfig(rc); err != nil {
		return fmt.Errorf("reload raft config: %w", err)
	}
	rc.HeartbeatTimeout, rc.ElectionTimeout = s.cfg.HeartbeatTimeout, s.cfg.ElectionTimeout
	if err := s.raft.ReloadConfig(rc); err != nil {
		return fmt.Errorf("reload raft config: %w", err)
	}
	return nil
}
