package robustness

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// The reap fault and what it needs: a dead node reap short enough for a
// run, a record of every removal from the Raft configuration (only the
// reap fault and Leave may remove an agent), and processes that hold a
// session on their agent for the whole run, as rpc.Server does, so that a
// reaped agent's sessions are seen to come back.

// reapFaultReap is dead_node_reap in the runs that draw the reap fault:
// longer than every other fault holds (maxHold) plus failure detection.
const reapFaultReap = 7 * time.Second

// reapOne partitions one running core agent other than the leader away
// until the leader has reaped it (removed it from the Raft configuration
// and the registry) while it runs, then heals and waits for it to rejoin.
func (r *run) reapOne() {
	l := r.c.LeaderIndex()
	var targets []int
	for _, i := range r.others(l) {
		if i < r.core {
			targets = append(targets, i)
		}
	}
	if len(targets) == 0 {
		r.t.Logf("robustness: reap: no running agent but the leader")
		return
	}
	a := targets[r.extra.IntN(len(targets))]
	name := r.c.Name(a)
	r.mu.Lock()
	r.reaped = append(r.reaped, reapWindow{agent: name, from: time.Since(r.start)})
	r.mu.Unlock()
	r.c.Partition([]int{a}, r.others(a))
	partitioned := time.Now()
	gone := testwait.Until(r.reap+15*time.Second, func() bool {
		l := r.c.Leader()
		return l != nil && l != r.c.Node(a) && !inRaft(l, name) && l.Store().FSM().Node(name) == nil
	})
	if gone {
		r.t.Logf("robustness: reap: %s reaped %s after partition", name, time.Since(partitioned).Round(time.Millisecond))
	} else {
		r.t.Errorf("reap: %s was partitioned away for %s (dead_node_reap %s) and is still in the Raft configuration or the registry",
			name, time.Since(partitioned).Round(time.Millisecond), r.reap)
	}
	r.c.Heal()
	healed := time.Now()
	r.mu.Lock()
	left := slices.Clone(r.left)
	r.mu.Unlock()
	back := testwait.Until(20*time.Second, func() bool { return r.membershipProblem(left) == "" })
	r.t.Logf("robustness: reap: %s back in the cluster %v, %s after the heal", name, back, time.Since(healed).Round(time.Millisecond))
	r.mu.Lock()
	r.reaped[len(r.reaped)-1].to = time.Since(r.start)
	r.mu.Unlock()
}

// wasReaped reports whether the reap fault has held agent away.
func (r *run) wasReaped(agent string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.reaped {
		if w.agent == agent {
			return true
		}
	}
	return false
}

// reapWindow is when the reap fault held agent away (since the run's
// start); to is zero while it does.
type reapWindow struct {
	agent    string
	from, to time.Duration
}

// removal is an agent seen gone from the leader's Raft configuration.
type removal struct {
	agent string
	at    time.Duration // since the run's start
}

// membershipMonitor records every agent that leaves the leader's Raft
// configuration while the run goes on. Its goroutine is owned by the run:
// stop ends it and waits.
type membershipMonitor struct {
	cancel   context.CancelFunc
	done     chan struct{}
	removals []removal // written by the monitor goroutine, read after stop
}

func (r *run) startMonitor() {
	ctx, cancel := context.WithCancel(context.Background())
	m := &membershipMonitor{cancel: cancel, done: make(chan struct{})}
	r.monitor = m
	r.t.Cleanup(m.stop)
	go func() {
		defer close(m.done)
		members := map[string]bool{}
		for ctx.Err() == nil {
			if l := r.c.Leader(); l != nil {
				if servers, err := l.Store().Servers(); err == nil {
					now := map[string]bool{}
					for _, s := range servers {
						now[s.ID] = true
					}
					for name := range members {
						if !now[name] {
							m.removals = append(m.removals, removal{agent: name, at: time.Since(r.start)})
						}
					}
					members = now
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
}

func (m *membershipMonitor) stop() {
	m.cancel()
	<-m.done
}

// checkRemovals: an agent left the Raft configuration only by leaving for
// good or, while the reap fault held it away, by being reaped; every reap
// fault reaped its agent.
func (r *run) checkRemovals() {
	r.monitor.stop()
	r.mu.Lock()
	left, reaped := slices.Clone(r.left), slices.Clone(r.reaped)
	r.mu.Unlock()
	names := map[string]bool{}
	for _, i := range left {
		names[r.c.Name(i)] = true
	}
	for _, rm := range r.monitor.removals {
		allowed := names[rm.agent]
		for _, w := range reaped {
			allowed = allowed || (w.agent == rm.agent && rm.at >= w.from && (w.to == 0 || rm.at <= w.to))
		}
		if !allowed {
			r.t.Errorf("membership: %s was removed from the Raft configuration at %s, and neither left nor was held away by the reap fault (reaped while its faults were shorter than dead_node_reap %s?)",
				rm.agent, rm.at.Round(time.Millisecond), r.reap)
		} else {
			r.t.Logf("robustness: %s left the Raft configuration at %s", rm.agent, rm.at.Round(time.Millisecond))
		}
	}
}

// residentService is the service of the residents' instances.
const residentService = "rb.resident"

// resident is a process next to one core agent that keeps one instance
// registered through a session with that agent for the whole run, as
// rpc.Server does: when the session ends (its agent crashed, or the
// cluster removed the session while the agent was unreachable) it opens a
// new one and registers again.
type resident struct {
	agent int
	id    string

	mu       sync.Mutex
	session  *client.Session // the current one, nil between sessions
	opened   int
	removed  int // sessions the cluster removed (FailedPrecondition)
	failures int
}

// startResidents starts one resident per core agent; checkResidents stops
// them.
func (r *run) startResidents() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	r.stopResidents = func() { cancel(); wg.Wait() }
	r.t.Cleanup(r.stopResidents)
	for i := range r.core {
		res := &resident{agent: i, id: fmt.Sprintf("r%d", i)}
		r.residents = append(r.residents, res)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.keepResident(ctx, res)
		}()
	}
}

func (r *run) keepResident(ctx context.Context, res *resident) {
	inst := &pb.Instance{Service: residentService, Id: res.id, Address: "127.0.0.1:9300"}
	owner := fmt.Sprintf("robustness resident of %s", r.c.Name(res.agent))
	for attempt := 0; ctx.Err() == nil; attempt++ {
		s, _, failed, err := r.openSession(ctx, res.agent, owner, []*pb.Instance{inst})
		if err != nil || failed > 0 {
			if s != nil {
				s.Close()
			}
			res.note(func() { res.failures++ })
			select {
			case <-ctx.Done():
			case <-time.After(min(50*time.Millisecond<<min(attempt, 4), time.Second)):
			}
			continue
		}
		attempt = 0
		res.note(func() { res.session, res.opened = s, res.opened+1 })
		select {
		case <-ctx.Done():
		case <-s.Done():
			if errors.Is(s.Err(), apierr.ErrSessionRequired) {
				res.note(func() { res.removed++ })
			}
			r.t.Logf("robustness: resident %s: session ended: %v; registering again", res.id, s.Err())
		}
		res.note(func() { res.session = nil })
		s.Close()
	}
}

func (res *resident) note(f func()) {
	res.mu.Lock()
	defer res.mu.Unlock()
	f()
}

// openSession opens a session on agent and registers insts on it; it
// returns the session (nil when it could not be opened) and how many
// registrations succeeded and failed.
func (r *run) openSession(ctx context.Context, agent int, owner string, insts []*pb.Instance) (*client.Session, int, int, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	s, err := r.agentClients[agent].Session(ctx, owner)
	if err != nil {
		return nil, 0, 0, err
	}
	registered, failed := 0, 0
	for _, inst := range insts {
		if _, err := s.Register(ctx, inst); err != nil {
			failed++
		} else {
			registered++
		}
	}
	return s, registered, failed, nil
}

// checkResidents: once the cluster has healed, every resident's instance
// is registered through the session it holds now, whatever happened to its
// earlier ones; then the residents close their sessions.
func (r *run) checkResidents() {
	var problem string
	ok := testwait.Until(settleFor, func() bool {
		problem = r.residentProblem()
		return problem == ""
	})
	for _, res := range r.residents {
		res.mu.Lock()
		r.t.Logf("resident %s on %s: %d sessions opened, %d removed by the cluster, %d failed attempts",
			res.id, r.c.Name(res.agent), res.opened, res.removed, res.failures)
		res.mu.Unlock()
	}
	if !ok {
		r.t.Errorf("residents: after healing, %s", problem)
	}
	r.stopResidents()
}

func (r *run) residentProblem() string {
	l := r.c.Leader()
	if l == nil {
		return "no leader"
	}
	sessions := map[string]bool{}
	for _, s := range l.Store().FSM().Sessions() {
		sessions[s.Id] = true
	}
	for _, res := range r.residents {
		res.mu.Lock()
		s := res.session
		res.mu.Unlock()
		if s == nil {
			return fmt.Sprintf("resident %s holds no session on %s", res.id, r.c.Name(res.agent))
		}
		inst := l.Store().FSM().Instance(residentService, res.id)
		switch {
		case inst == nil:
			return fmt.Sprintf("resident %s's instance is not in the registry (its session %s on %s is open)", res.id, s.ID(), r.c.Name(res.agent))
		case inst.Session != s.ID():
			return fmt.Sprintf("resident %s's instance is bound to session %s, not to its open session %s", res.id, inst.Session, s.ID())
		case !sessions[s.ID()]:
			return fmt.Sprintf("resident %s's open session %s on %s is not in the registry", res.id, s.ID(), r.c.Name(res.agent))
		}
	}
	return ""
}
