package robustness

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/internal/regmodel"
)

// Watches: one watch of linService on every core agent, one through the
// failover client, and one of every service. The checks, per watch:
// revisions strictly increase from one response to the next and never
// decrease within one; a snapshot never goes back before what was already
// delivered; no event comes twice; the state the events build ends equal
// to the registry's. Across watches: two watches that both covered a
// revision (without a snapshot in between) saw the same events at it, so
// none lost one; and the state a watch had built at revision R equals what
// every read answered at R.

// watchRecord is everything one watch received.
type watchRecord struct {
	name    string
	service string // "" watches every service
	cancel  context.CancelFunc
	done    chan struct{}

	mu    sync.Mutex
	resps []*pb.WatchResponse
	err   error // why Recv stopped, if not the end of the test
}

func (w *watchRecord) responses() ([]*pb.WatchResponse, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.resps), w.err
}

func (r *run) startWatches() {
	for i := range r.core {
		r.watches = append(r.watches, watch(r.t, fmt.Sprintf("watch %s via %s", linService, r.c.Name(i)), r.agentClients[i], linService))
	}
	r.watches = append(r.watches, watch(r.t, fmt.Sprintf("watch %s via any agent", linService), r.all, linService))
	r.watches = append(r.watches, watch(r.t, fmt.Sprintf("watch everything via %s", r.c.Name(0)), r.agentClients[0], ""))
}

// watch watches service ("" for every service) from revision 0 through cl
// and records every response until t's cleanup stops it; why the stream
// ended, if it ended before, is the record's err. A watch that cannot
// start fails t now.
func watch(t *testing.T, name string, cl *client.Client, service string) *watchRecord {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watchRecord{name: name, service: service, cancel: cancel, done: make(chan struct{})}
	stream, err := cl.Watch(ctx, service, 0)
	if err != nil {
		cancel()
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { cancel(); <-w.done })
	go func() {
		defer close(w.done)
		for {
			resp, err := stream.Recv()
			w.mu.Lock()
			if err != nil {
				if ctx.Err() == nil {
					w.err = err
				}
				w.mu.Unlock()
				return
			}
			w.resps = append(w.resps, resp)
			w.mu.Unlock()
		}
	}()
	return w
}

// checkpoint is the state a watch had built at a revision.
type checkpoint struct {
	rev   uint64
	state regmodel.State
}

// coverage is a stretch of revisions a watch saw without a snapshot in
// between: [lo, hi], the events it got at each revision of linService, and
// its state after each.
type coverage struct {
	lo, hi uint64
	events map[uint64][]string
	states []checkpoint
}

func eventKey(ev *pb.Event) string {
	i := ev.GetInstance()
	return fmt.Sprintf("%s %s/%s v=%s mod=%d", ev.GetType(), i.GetService(), i.GetId(), i.GetMetadata()["v"], i.GetModRevision())
}

// replay rebuilds a watch's view and reports broken promises with errorf.
// It returns its coverage stretches and its final state.
func replay(w *watchRecord, errorf func(string, ...any)) ([]*coverage, regmodel.State) {
	resps, _ := w.responses()
	var (
		cov     []*coverage
		cur     *coverage
		state   regmodel.State
		last    uint64
		started bool
	)
	apply := func(ev *pb.Event) {
		if ev.GetInstance().GetService() != linService {
			return
		}
		s, err := regmodel.StateOf([]*pb.Instance{ev.GetInstance()})
		if err != nil {
			errorf("%s: event for an %v: %v", w.name, err, ev)
			return
		}
		for id := range regmodel.IDs {
			if s[id] == "" {
				continue
			}
			if ev.GetType() == pb.Event_DELETE {
				state[id] = ""
			} else {
				state[id] = s[id]
			}
		}
	}
	for n, resp := range resps {
		rev := resp.GetHeader().GetRevision()
		if resp.GetSnapshot() {
			if started && rev < last {
				errorf("%s: response %d is a snapshot at revision %d, before revision %d already delivered", w.name, n, rev, last)
			}
			started = true
			state = regmodel.State{}
			for _, ev := range resp.GetEvents() {
				apply(ev)
			}
			cur = &coverage{lo: rev, hi: rev, events: map[uint64][]string{}, states: []checkpoint{{rev, state}}}
			cov = append(cov, cur)
			last = max(last, rev)
			continue
		}
		if !started {
			errorf("%s: response %d carries events before any snapshot (the watch started at revision 0)", w.name, n)
			started = true
			cur = &coverage{events: map[uint64][]string{}}
			cov = append(cov, cur)
		}
		before, prev := last, uint64(0)
		for _, ev := range resp.GetEvents() {
			er := ev.GetRevision()
			switch {
			case er <= before:
				errorf("%s: response %d: event at revision %d, but revision %d was delivered before (%s)", w.name, n, er, before, eventKey(ev))
			case er < prev:
				errorf("%s: response %d: event at revision %d after one at revision %d (%s)", w.name, n, er, prev, eventKey(ev))
			}
			prev = er
			if ev.GetInstance().GetService() == linService {
				k := eventKey(ev)
				if slices.Contains(cur.events[er], k) {
					errorf("%s: response %d: event delivered twice at revision %d: %s", w.name, n, er, k)
				}
				cur.events[er] = append(cur.events[er], k)
			}
			apply(ev)
			if len(cur.states) > 0 && cur.states[len(cur.states)-1].rev == er {
				cur.states[len(cur.states)-1].state = state
			} else {
				cur.states = append(cur.states, checkpoint{er, state})
			}
			last = max(last, er)
		}
		last = max(last, rev)
		cur.hi = last
	}
	return cov, state
}

// checkWatches waits for every watch to reach the registry's final state,
// stops them, and checks what they received.
func (r *run) checkWatches() {
	final := r.leaderState()
	deadline := time.Now().Add(settleFor)
	for _, w := range r.watches {
		for {
			_, got := replay(w, func(string, ...any) {})
			_, err := w.responses()
			if got == final {
				break
			}
			if err != nil || time.Now().After(deadline) {
				r.t.Errorf("%s: ended at %s, the registry holds %s (watch error: %v)", w.name, got, final, err)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, w := range r.watches {
		w.cancel()
		<-w.done
	}
	covs := make([][]*coverage, len(r.watches))
	for i, w := range r.watches {
		covs[i], _ = replay(w, r.t.Errorf)
		resps, err := w.responses()
		if err != nil {
			r.t.Errorf("%s: stopped with %v", w.name, err)
		}
		r.t.Logf("%s: %d responses, %d stretches without a snapshot", w.name, len(resps), len(covs[i]))
	}
	names := make([]string, len(r.watches))
	for i, w := range r.watches {
		names[i] = w.name
	}
	compareWatches(names, covs, r.t.Errorf)
	r.hist.mu.Lock()
	reads, writes := slices.Clone(r.hist.reads), slices.Clone(r.hist.writes)
	r.hist.mu.Unlock()
	compareReads(names, covs, reads, writes, r.t.Errorf, r.t.Logf)
}

// leaderState is linService's state on the leader, once every running agent
// has converged (checkConverged ran before).
func (r *run) leaderState() regmodel.State {
	r.c.WaitFor(settleFor, "a leader to read the final state from", func() bool { return r.c.Leader() != nil })
	l := r.c.Leader()
	if l == nil {
		r.t.Fatalf("the leader went away")
	}
	insts, _ := l.Store().FSM().Instances(linService)
	s, _ := regmodel.StateOf(insts)
	return s
}

// compareWatches: watches that both covered a revision got the same events.
func compareWatches(names []string, covs [][]*coverage, errorf func(string, ...any)) {
	for a := range covs {
		for b := a + 1; b < len(covs); b++ {
			for _, ca := range covs[a] {
				for _, cb := range covs[b] {
					lo, hi := max(ca.lo, cb.lo), min(ca.hi, cb.hi)
					if lo >= hi {
						continue
					}
					for rev := lo + 1; rev <= hi; rev++ {
						ea, eb := slices.Sorted(slices.Values(ca.events[rev])), slices.Sorted(slices.Values(cb.events[rev]))
						if !slices.Equal(ea, eb) {
							errorf("watches disagree at revision %d, which both covered: %s got %q, %s got %q",
								rev, names[a], ea, names[b], eb)
						}
					}
				}
			}
		}
	}
}

// stateAt returns the state a watch stretch had built at revision rev.
func (c *coverage) stateAt(rev uint64) (checkpoint, bool) {
	if rev < c.lo || rev > c.hi || len(c.states) == 0 {
		return checkpoint{}, false
	}
	n, found := slices.BinarySearchFunc(c.states, rev, func(cp checkpoint, rev uint64) int { return cmpUint(cp.rev, rev) })
	if !found {
		n--
	}
	if n < 0 {
		return checkpoint{}, false
	}
	return c.states[n], true
}

// compareReads: a read answered at revision R saw the state a watch had
// built at R (so a stale or default read returned a state that existed),
// and every acknowledged write is in the state the watches built at its
// revision (so the watches' history is the registry's).
func compareReads(names []string, covs [][]*coverage, reads []read, writes []write, errorf, logf func(string, ...any)) {
	uncovered := map[pb.Consistency]int{}
	for _, rd := range reads {
		covered := false
		for i, wc := range covs {
			for _, c := range wc {
				cp, ok := c.stateAt(rd.rev)
				if !ok {
					continue
				}
				covered = true
				if cp.state != rd.seen {
					errorf("a %s read via n%d at revision %d saw %s; %s had built %s at revision %d",
						rd.mode, rd.agent+1, rd.rev, rd.seen, names[i], cp.state, cp.rev)
				}
			}
		}
		if !covered {
			uncovered[rd.mode]++
		}
	}
	logf("registry: reads at a revision no watch covered (not compared): %v", uncovered)
	for _, w := range writes {
		want := w.in.Value // register; "" for deregister
		for i, wc := range covs {
			for _, c := range wc {
				if cp, ok := c.stateAt(w.rev); ok && cp.rev == w.rev && cp.state[w.in.ID] != want {
					errorf("acknowledged %s at revision %d, but %s built %s at that revision",
						regmodel.Model.DescribeOperation(w.in, regmodel.Output{}), w.rev, names[i], cp.state)
				} else if ok && cp.rev != w.rev && w.rev > c.lo {
					errorf("acknowledged %s at revision %d, but %s got no event at that revision",
						regmodel.Model.DescribeOperation(w.in, regmodel.Output{}), w.rev, names[i])
				}
			}
		}
	}
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
