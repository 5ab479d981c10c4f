package raftstore

import (
	"context"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
)

// back ends the runs of failures about peer, because raft reached it
// again, and returns the one line that says so (none when there were no
// runs): how long its failures went on and how many lines they were.
func (n *peerNoise) back(component, peer string) []noiseLine {
	n.mu.Lock()
	defer n.mu.Unlock()
	var start time.Time
	var total uint64
	for k, ep := range n.episodes {
		if k.peer != peer {
			continue
		}
		if start.IsZero() || ep.start.Before(start) {
			start = ep.start
		}
		total += ep.total
		delete(n.episodes, k)
	}
	if total == 0 {
		return nil
	}
	return []noiseLine{{level: slog.LevelInfo, msg: "peer answers again", args: []any{
		"component", component, "peer", peer, "failing_for", n.now().Sub(start).Round(time.Second), "failure_lines", total,
	}}}
}

// peerBack logs that peer answers again, when lines about its failures
// were logged (see peerNoise.back).
func (a *hclogAdapter) peerBack(peer string) {
	for _, l := range a.noise.back(a.name, peer) {
		a.l.Log(context.Background(), l.level, l.msg, l.args...)
	}
}

// watchPeersBack tells the raft log adapter when a peer the leader could
// not reach answers its heartbeats again (raft's
// ResumedHeartbeatObservation), so the recovery is logged at once, not
// when the next line comes, and the leader's count of voters not
// answering it (heartbeats.go) lets the peer go. It runs until the store
// stops.
func (s *Store) watchPeersBack(log *hclogAdapter) {
	observe[raft.ResumedHeartbeatObservation](s, func(o raft.Observation) {
		if r, ok := o.Data.(raft.ResumedHeartbeatObservation); ok {
			log.peerBack(string(r.PeerID))
			s.heartbeatResumed(string(r.PeerID))
		}
	}, nil)
}

// observe runs handle on each of raft's observations whose data is of
// type T, on a goroutine of its own, until the store stops; then it runs
// stopped, when set.
func observe[T any](s *Store, handle func(raft.Observation), stopped func()) {
	ch := make(chan raft.Observation, 16)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(T)
		return ok
	})
	s.raft.RegisterObserver(obs)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.raft.DeregisterObserver(obs)
		for {
			select {
			case <-s.stop:
				if stopped != nil {
					stopped()
				}
				return
			case o := <-ch:
				handle(o)
			}
		}
	}()
}
