package raftstore

import (
	"fmt"
	"strings"
	"time"
)

// Reach is what the agent knows of whether it can reach another agent:
// its gossip's view (raftstore has no failure detector of its own).
type Reach struct {
	// Alive is true when the agent answers gossip's probes.
	Alive bool
	// Status says how it is not alive: "failed", "left", or "unknown" when
	// gossip does not know it.
	Status string
	// Since is when that status began; zero when not known.
	Since time.Time
	// Lagging is true when the agent is alive, and unreachable only by
	// what its gossip meta said last, which can lag the agent by a second
	// or more (a voter that has just received the log may still say it
	// has none).
	Lagging bool
}

// ReachFunc tells the reach of the agent with Raft server id.
type ReachFunc func(id string) Reach

// Unreachable is a voter the agent cannot reach.
type Unreachable struct {
	ID     string
	Status string
	// Since is when it became unreachable; zero when not known.
	Since time.Time
	// Lagging: it is alive, and counted unreachable on gossip meta that
	// may lag it (Reach.Lagging).
	Lagging bool
}

// Quorum is which voters of the Raft configuration the agent can reach.
// A leader needs a majority of the voters: with fewer reachable, no
// leader can be elected on this agent's side and no write can commit.
type Quorum struct {
	// Voters is the number of voters.
	Voters int
	// Unreachable are the voters not reachable, in configuration order.
	Unreachable []Unreachable
}

// Reachable is how many voters can be reached, this agent included.
func (q Quorum) Reachable() int { return q.Voters - len(q.Unreachable) }

// Needed is how many voters a leader needs: a majority.
func (q Quorum) Needed() int { return q.Voters/2 + 1 }

// Lost reports whether too few voters are reachable for a leader.
func (q Quorum) Lost() bool { return q.Voters > 0 && q.Reachable() < q.Needed() }

// SurelyLost reports whether too few voters are reachable for a leader
// even if every voter counted unreachable on gossip meta that may lag
// (Unreachable.Lagging) can be reached after all.
func (q Quorum) SurelyLost() bool {
	lagging := 0
	for _, u := range q.Unreachable {
		if u.Lagging {
			lagging++
		}
	}
	return q.Lost() && q.Reachable()+lagging < q.Needed()
}

// String says it for an operator: "1 of 3 voters reachable (n2 failed
// 12s ago, n3 unknown); a leader needs 2".
func (q Quorum) String() string {
	return q.describe(time.Now())
}

func (q Quorum) describe(now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d voters reachable", q.Reachable(), q.Voters)
	if len(q.Unreachable) > 0 {
		parts := make([]string, 0, len(q.Unreachable))
		for _, u := range q.Unreachable {
			p := u.ID + " " + u.Status
			if !u.Since.IsZero() {
				p += " " + now.Sub(u.Since).Round(time.Second).String() + " ago"
			}
			parts = append(parts, p)
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	fmt.Fprintf(&b, "; a leader needs %d", q.Needed())
	return b.String()
}

// Quorum reads the voters of the latest Raft configuration and asks reach
// about each of them but this agent, which is always reachable.
func (s *Store) Quorum(reach ReachFunc) (Quorum, error) {
	servers, err := s.Servers()
	if err != nil {
		return Quorum{}, err
	}
	// On the leader, a voter gossip counts alive is unreachable all the
	// same while it does not answer the leader's heartbeats
	// (heartbeats.go).
	now := time.Now()
	return quorumOf(servers, s.cfg.NodeID, func(id string) Reach {
		r := reach(id)
		if r.Alive {
			if since, failing := s.notAnswering(id, now); failing {
				return Reach{Status: notAnsweringLeader, Since: since}
			}
		}
		return r
	}), nil
}

func quorumOf(servers []Server, self string, reach ReachFunc) Quorum {
	var q Quorum
	for _, srv := range servers {
		if srv.Suffrage != Voter {
			continue
		}
		q.Voters++
		if srv.ID == self {
			continue
		}
		if r := reach(srv.ID); !r.Alive {
			q.Unreachable = append(q.Unreachable, Unreachable{ID: srv.ID, Status: r.Status, Since: r.Since, Lagging: r.Lagging})
		}
	}
	return q
}
