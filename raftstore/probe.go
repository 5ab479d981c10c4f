package raftstore

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Non-voters ask the voters.
//
// A voter that knows no leader learns within a few heartbeat timeouts
// whether it can be part of a quorum: the votes of the voters it can reach
// reach it, and theirs only (isolated, contact.go). A non-voter hears
// nothing in an election, so silence tells it nothing: cut off by a
// partition, it would learn only from StaleReadBound (5 s) that no
// leader will reach it, its writes waiting all that time and its watches
// and sessions going on. So while a non-voter knows no leader, it asks
// every voter, each contact look, whether it answers (SetVoterProbe: the
// agent's gRPC health check), and counts an answer as hearing from the
// voter. One that fewer voters answer than a leader needs (a majority of
// them) cannot reach a leader: it counts itself cut off a second or so
// into the cut, as a voter does, while one the voters answer waits for
// the election's winner.

// probeTimeout bounds a probe of a voter, and is how long a non-voter
// that has just lost its leader waits for the first answers before it
// counts the silent voters. A voter is asked at most once a probeTimeout
// (twice within minIsolation, the shortest time an answer counts), so
// that many non-voters without a leader for long (no quorum) ask each
// voter a few times a second between them, not every contact look.
const probeTimeout = 500 * time.Millisecond

// VoterProbe checks that the voter with server ID id answers this agent
// (within ctx).
type VoterProbe func(ctx context.Context, id string) error

// voterProbes asks the voters for a non-voter that knows no leader.
type voterProbes struct {
	probe atomic.Pointer[VoterProbe]
	// kick carries the voters to ask to the probing goroutine; a look
	// whose voters it has not taken yet is dropped.
	kick chan []string
}

// SetVoterProbe sets how this store, while a non-voter without a leader,
// asks a voter whether it answers. Without one a non-voter counts itself
// cut off only once StaleReadBound has passed without a leader.
func (s *Store) SetVoterProbe(p VoterProbe) { s.probes.probe.Store(&p) }

// askVoters asks each of ids whether it answers, unless the last request
// is still waiting; it never blocks.
func (s *Store) askVoters(ids []string) {
	select {
	case s.probes.kick <- ids:
	default:
	}
}

// runVoterProbes probes the voters askVoters names, each at most once at
// a time and once a probeTimeout, noting every answer as the voter heard,
// until the store stops.
func (s *Store) runVoterProbes() {
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		probing sync.WaitGroup
		mu      sync.Mutex
		asking  = map[string]bool{}
		asked   = map[string]time.Time{} // when each voter was last asked
	)
	defer probing.Wait()
	defer cancel() // before the wait
	for {
		select {
		case <-s.stop:
			return
		case ids := <-s.probes.kick:
			probe := s.probes.probe.Load()
			now := time.Now()
			for _, id := range ids {
				if now.Sub(asked[id]) < probeTimeout {
					continue
				}
				mu.Lock()
				busy := asking[id]
				asking[id] = true
				mu.Unlock()
				if busy {
					continue
				}
				asked[id] = now
				probing.Add(1)
				go func() {
					defer probing.Done()
					pctx, done := context.WithTimeout(ctx, probeTimeout)
					err := (*probe)(pctx, id)
					done()
					if err == nil {
						s.transport.answered(raft.ServerID(id), time.Now())
					}
					mu.Lock()
					delete(asking, id)
					mu.Unlock()
				}()
			}
		}
	}
}
