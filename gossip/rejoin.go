package gossip

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"time"
)

// Rejoining after a partition.
//
// memberlist v0.7.0 gossips to dead members only while it has broadcasts
// to send and runs push/pull only with alive ones, so once both sides of a
// partition have declared each other dead nothing brings them back
// together, and a healed partition would end with the leader reaping a
// running agent. Like Serf's reconnect, gossip therefore keeps trying to
// Join members it saw fail, one at a time, while Config.StillMember says
// they belong to the cluster, and the seed addresses while no other member
// is alive. A join is a push/pull: each side learns that the other
// declared it dead, refutes it, and both see each other alive again.

// seedPrefix marks targets that are seed addresses rather than members.
const seedPrefix = "seed "

// rejoinTarget is a member (or seed address) to try, and when.
type rejoinTarget struct {
	addr    string
	next    time.Time
	backoff time.Duration
}

// rejoiner decides which failed member to try next. It is owned by the
// rejoin goroutine and not safe for concurrent use.
type rejoiner struct {
	self        string // this agent's name
	timers      rejoinTimers
	stillMember func(name string) bool
	seeds       func() []string
	rand        func(n int) int
	targets     map[string]*rejoinTarget // by member name, or seedPrefix+addr
}

func newRejoiner(self string, timers rejoinTimers, stillMember func(string) bool, seeds func() []string) *rejoiner {
	return &rejoiner{
		self: self, timers: timers, stillMember: stillMember, seeds: seeds,
		rand:    rand.IntN,
		targets: make(map[string]*rejoinTarget),
	}
}

// update brings the targets in line with the member table at now: failed
// members that still belong to the cluster are kept (also once the table
// has forgotten them), alive and left ones dropped; seeds are targets only
// while no other member is alive.
func (r *rejoiner) update(members []Member, selfAddr string, now time.Time) {
	listed := make(map[string]bool, len(members))
	alone := true
	for _, m := range members {
		if m.Name == r.self {
			continue
		}
		listed[m.Name] = true
		switch {
		case m.Status != StatusFailed:
			delete(r.targets, m.Name)
			alone = alone && m.Status != StatusAlive
		case !r.belongs(m.Name, true):
			delete(r.targets, m.Name)
		default:
			if t, ok := r.targets[m.Name]; !ok || t.addr != m.Addr {
				r.add(m.Name, m.Addr, now)
			}
		}
	}
	seeds := make(map[string]bool)
	if alone && r.seeds != nil {
		for _, a := range r.seeds() {
			if a != selfAddr {
				seeds[seedPrefix+a] = true
			}
		}
	}
	for key := range r.targets {
		switch {
		case strings.HasPrefix(key, seedPrefix):
			if !seeds[key] {
				delete(r.targets, key)
			}
		case !listed[key] && !r.belongs(key, false):
			delete(r.targets, key)
		}
	}
	for key := range seeds {
		if _, ok := r.targets[key]; !ok {
			r.add(key, strings.TrimPrefix(key, seedPrefix), now)
		}
	}
}

// belongs reports whether name is still worth rejoining; listed says
// whether the member table still lists it.
func (r *rejoiner) belongs(name string, listed bool) bool {
	if r.stillMember == nil {
		return listed
	}
	return r.stillMember(name)
}

func (r *rejoiner) add(key, addr string, now time.Time) {
	r.targets[key] = &rejoinTarget{addr: addr, next: now.Add(r.timers.interval), backoff: r.timers.interval}
}

// pick returns one target that is due at now, chosen at random.
func (r *rejoiner) pick(now time.Time) (key, addr string, ok bool) {
	var due []string
	for k, t := range r.targets {
		if !now.Before(t.next) {
			due = append(due, k)
		}
	}
	if len(due) == 0 {
		return "", "", false
	}
	key = due[r.rand(len(due))]
	return key, r.targets[key].addr, true
}

// done records an attempt on key: a failure doubles its backoff (up to
// the cap) and waits a random time from the backoff's upper half; a join
// that answered resets it, in case the member is still not alive at the
// next look.
func (r *rejoiner) done(key string, failed bool, now time.Time) {
	t, ok := r.targets[key]
	if !ok {
		return
	}
	if !failed {
		t.backoff = r.timers.interval
		t.next = now.Add(t.backoff)
		return
	}
	t.backoff = min(2*t.backoff, r.timers.maxBackoff)
	t.next = now.Add(t.backoff/2 + time.Duration(r.rand(int(t.backoff/2)+1)))
}

// runRejoin tries one due target every interval until stop is closed.
func (g *Gossip) runRejoin(stop <-chan struct{}) {
	r := newRejoiner(g.cfg.Name, g.rejoin, g.cfg.StillMember, g.cfg.Seeds)
	t := time.NewTicker(g.rejoin.interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := time.Now()
		r.update(g.Members(), g.LocalAddr(), now)
		key, addr, ok := r.pick(now)
		if !ok {
			continue
		}
		_, err := g.Join(context.Background(), []string{addr})
		if errors.Is(err, ErrClosed) || errors.Is(err, ErrLeft) {
			return
		}
		r.done(key, err != nil, time.Now())
		if err != nil {
			g.log.Debug("rejoin attempt found nobody", "target", key, "addr", addr, "err", err)
			continue
		}
		g.log.Info("rejoined a member seen failed", "target", key, "addr", addr)
	}
}
