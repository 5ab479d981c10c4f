package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zrpcio/zrpc/bench/internal/proc"
)

// deliveryWait is how long a round waits, after its last write, for
// events still on their way; what has not arrived by then is lost.
const deliveryWait = 15 * time.Second

// watch measures write → event latency at Rate writes/s: on one node
// (write and watch on the same one) and, on 3 nodes, leader → follower
// and follower → follower.
func (r *runner) watch(ctx context.Context) error {
	for _, nodes := range r.cfg.Nodes {
		err := r.eachRound(ctx, r.cfg.Reps, nodes, nil, nil, func(ctx context.Context, s slot, c cluster) error {
			cases, err := watchCases(ctx, c)
			if err != nil {
				return err
			}
			for _, wc := range cases {
				res, err := r.watchRound(ctx, c, wc)
				if err != nil {
					return fmt.Errorf("%s: %w", wc.name, err)
				}
				res.Scenario, res.Topology, res.Case, res.System, res.Rep = "watch", topology(nodes), wc.name, s.system, s.rep
				if err := r.record(res); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

type watchCase struct {
	name                 string
	write, watch, leader int
}

// watchCases places the writer and the watcher by role.
func watchCases(ctx context.Context, c cluster) ([]watchCase, error) {
	if c.members() == 1 {
		return []watchCase{{"same node", 0, 0, 0}}, nil
	}
	l, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	var f []int
	for i := range c.members() {
		if i != l {
			f = append(f, i)
		}
	}
	return []watchCase{{"leader→follower", l, f[0], l}, {"follower→follower", f[0], f[1], l}}, nil
}

// deliveries records the latency of every event carrying a stamp taken
// after the round began, and when arrivals is set, when each arrived.
type deliveries struct {
	since    atomic.Int64 // stampNow at the round's start; earlier stamps are ignored
	lat      latencies
	arrivals *arrivals
}

func (d *deliveries) deliver(stamp int64) {
	if since := d.since.Load(); since != 0 && stamp >= since {
		now := stampNow()
		d.lat.add(time.Duration(now - stamp))
		d.arrivals.note(stamp, now)
	}
}

// await waits until want events have arrived or deliveryWait passes.
func (d *deliveries) await(ctx context.Context, want int) error {
	deadline := time.Now().Add(deliveryWait)
	for d.lat.count() < want && time.Now().Before(deadline) {
		if err := proc.Sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// latencyMetrics adds the quantiles of d and the events lost to res.
func (d *deliveries) latencyMetrics(res *Result, want int) {
	sorted := d.lat.sorted()
	res.metric("p50 ms", quantileMS(sorted, 0.50))
	res.metric("p99 ms", quantileMS(sorted, 0.99))
	if len(sorted) > 0 {
		res.metric("max ms", ms(sorted[len(sorted)-1]))
	}
	res.metric("events lost", float64(max(0, want-len(sorted))))
}

// watchRound writes WatchEvents times (cycling over 100 keys of one
// group) through member wc.write and measures their events on member
// wc.watch. With WatchStages it also times each write's acknowledgement
// and, when the watcher is not on the leader, the write's event on a
// second watcher there.
func (r *runner) watchRound(ctx context.Context, c cluster, wc watchCase) (Result, error) {
	const group = "watch-bench.rpc"
	var d, atLeader deliveries
	var acks *arrivals
	if r.cfg.WatchStages {
		d.arrivals, acks = newArrivals(), newArrivals()
		if wc.watch != wc.leader {
			atLeader.arrivals = newArrivals()
			lc, err := c.newWatchConn(ctx, wc.leader)
			if err != nil {
				return Result{}, err
			}
			defer lc.close()
			if err := lc.watch(ctx, group, atLeader.deliver); err != nil {
				return Result{}, err
			}
		}
	}
	conn, err := c.newWatchConn(ctx, wc.watch)
	if err != nil {
		return Result{}, err
	}
	defer conn.close()
	if err := conn.watch(ctx, group, d.deliver); err != nil {
		return Result{}, err
	}
	w, err := c.newWriter(ctx, wc.write)
	if err != nil {
		return Result{}, err
	}
	defer w.close()
	if err := timed(ctx, func(ctx context.Context) error { return w.put(ctx, group, "warmup", 0) }); err != nil {
		return Result{}, fmt.Errorf("warm-up write: %w", err)
	}
	since := stampNow()
	d.since.Store(since)
	atLeader.since.Store(since)
	rate, err := paced(ctx, r.cfg.WatchEvents, r.cfg.Rate, func(i int) error {
		return timed(ctx, func(ctx context.Context) error {
			stamp := stampNow()
			if err := w.put(ctx, group, fmt.Sprintf("k%03d", i%100), stamp); err != nil {
				return err
			}
			acks.note(stamp, stampNow())
			return nil
		})
	})
	if err != nil {
		return Result{}, err
	}
	if err := d.await(ctx, r.cfg.WatchEvents); err != nil {
		return Result{}, err
	}
	if atLeader.arrivals != nil {
		if err := atLeader.await(ctx, r.cfg.WatchEvents); err != nil {
			return Result{}, err
		}
	}
	var res Result
	d.latencyMetrics(&res, r.cfg.WatchEvents)
	if r.cfg.WatchStages {
		stageMetrics(&res, acks, atLeader.arrivals, d.arrivals)
	}
	res.Metrics["writes/s"] = rate
	return res, nil
}

// arrivals records when something carrying each write's stamp arrived
// (stampNow). A nil *arrivals records nothing.
type arrivals struct {
	mu sync.Mutex
	at map[int64]int64
}

func newArrivals() *arrivals { return &arrivals{at: make(map[int64]int64)} }

func (a *arrivals) note(stamp, at int64) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.at[stamp]; !ok {
		a.at[stamp] = at
	}
}

// since returns, for every stamp both a and from recorded, how long after
// from's arrival a's came (negative when it came first).
func (a *arrivals) since(from *arrivals) []time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	from.mu.Lock()
	defer from.mu.Unlock()
	var out []time.Duration
	for stamp, at := range a.at {
		if t0, ok := from.at[stamp]; ok {
			out = append(out, time.Duration(at-t0))
		}
	}
	slices.Sort(out)
	return out
}

// stamped returns how long after its stamp each arrival came.
func (a *arrivals) stamped() []time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]time.Duration, 0, len(a.at))
	for stamp, at := range a.at {
		out = append(out, time.Duration(at-stamp))
	}
	slices.Sort(out)
	return out
}

// stageMetrics adds where a write's time to its event went: the write's
// acknowledgement, its event on the leader (when leader is not nil: the
// watcher is elsewhere), and the watcher's event after each.
func stageMetrics(res *Result, acks, leader, events *arrivals) {
	quantiles := func(name string, d []time.Duration) {
		res.metric("stage: "+name+" p50 ms", quantileMS(d, 0.50))
		res.metric("stage: "+name+" p99 ms", quantileMS(d, 0.99))
	}
	quantiles("write acknowledged", acks.stamped())
	quantiles("event after acknowledgement", events.since(acks))
	if leader != nil {
		quantiles("event on the leader", leader.stamped())
		quantiles("event after the leader's", events.since(leader))
	}
}

// fanout measures FanoutServices × FanoutWatchers watchers on one node,
// spread over FanoutConns connections, at Rate writes/s: every write's
// event reaches FanoutWatchers watchers.
func (r *runner) fanout(ctx context.Context) error {
	return r.eachRound(ctx, r.cfg.Reps, 1, nil, nil, func(ctx context.Context, s slot, c cluster) error {
		res, err := r.fanoutRound(ctx, c)
		if err != nil {
			return err
		}
		res.Scenario, res.Topology, res.System, res.Rep = "fanout", topology(1), s.system, s.rep
		res.Case = fmt.Sprintf("%d watchers", r.cfg.FanoutServices*r.cfg.FanoutWatchers)
		return r.record(res)
	})
}

func (r *runner) fanoutRound(ctx context.Context, c cluster) (Result, error) {
	cfg := r.cfg
	group := func(s int) string { return fmt.Sprintf("fanout-%04d.rpc", s) }
	conns := make([]watchConn, cfg.FanoutConns)
	defer func() {
		for _, wc := range conns {
			if wc != nil {
				wc.close()
			}
		}
	}()
	for k := range conns {
		wc, err := c.newWatchConn(ctx, 0)
		if err != nil {
			return Result{}, err
		}
		conns[k] = wc
	}
	var d deliveries
	setup := time.Now()
	// Watcher j watches service j / FanoutWatchers over connection
	// j mod FanoutConns; each connection opens its watchers in turn.
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for k := range conns {
		wg.Go(func() {
			for j := k; j < cfg.FanoutServices*cfg.FanoutWatchers; j += len(conns) {
				if err := conns[k].watch(ctx, group(j/cfg.FanoutWatchers), d.deliver); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Result{}, fmt.Errorf("open watchers: %w", err)
	}
	setupTime := time.Since(setup)
	w, err := c.newWriter(ctx, 0)
	if err != nil {
		return Result{}, err
	}
	defer w.close()
	if err := timed(ctx, func(ctx context.Context) error { return w.put(ctx, "fanout-warmup.rpc", "warmup", 0) }); err != nil {
		return Result{}, fmt.Errorf("warm-up write: %w", err)
	}
	d.since.Store(stampNow())
	// The watchers live in this process: what they cost it is recorded
	// too, as a check that the load tool did not fall behind.
	self0, _ := proc.SelfCPUTime()
	cpu0 := cpuSeconds(c)
	t0 := time.Now()
	rate, err := paced(ctx, cfg.FanoutWrites, cfg.Rate, func(i int) error {
		return timed(ctx, func(ctx context.Context) error {
			return w.put(ctx, group(i%cfg.FanoutServices), "k", stampNow())
		})
	})
	if err != nil {
		return Result{}, err
	}
	want := cfg.FanoutWrites * cfg.FanoutWatchers
	if err := d.await(ctx, want); err != nil {
		return Result{}, err
	}
	var res Result
	d.latencyMetrics(&res, want)
	// The agent's CPU per delivered event: what fanning an event out to
	// its watchers costs the server.
	res.metric("server CPU us/event", (cpuSeconds(c)-cpu0)*1e6/float64(want))
	if rss, err := c.process(0).RSS(); err == nil {
		res.metric("server RSS MiB", float64(rss)/(1<<20))
	}
	res.Metrics["watch setup s"] = setupTime.Seconds()
	res.Metrics["writes/s"] = rate
	if self1, err := proc.SelfCPUTime(); err == nil {
		res.Metrics["load tool CPU %"] = 100 * (self1 - self0).Seconds() / time.Since(t0).Seconds()
	}
	return res, nil
}
