package registry

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zrpcio/zrpc/bench/internal/proc"
)

// callTimeout bounds one write or read of the load; slower is an error.
const callTimeout = 10 * time.Second

// puts measures registrations: zrpc TTL instances through package client
// against etcd lease-attached puts, one client and connection per writer.
// On several nodes the writers are spread over them by role, the same way
// on both systems, starting with a follower: writer i talks to node
// (leader + 1 + i) mod nodes, so one writer's writes are all forwarded to
// the leader and more writers' are two thirds forwarded. With
// Config.FirstOnLeader writer i talks to node (leader + i) mod nodes
// instead: one writer's writes skip the forward hop.
func (r *runner) puts(ctx context.Context) error {
	for _, nodes := range r.cfg.Nodes {
		err := r.eachRound(ctx, r.cfg.Reps, nodes, nil, nil, func(ctx context.Context, s slot, c cluster) error {
			for _, w := range r.cfg.Writers {
				res, err := r.putRound(ctx, c, w, s)
				if err != nil {
					return fmt.Errorf("%d writers: %w", w, err)
				}
				res.Scenario, res.Topology, res.System, res.Rep = "puts", topology(nodes), s.system, s.rep
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

// putRound runs writers writers for the configured duration (at most
// MaxOps writes), after one unmeasured write each (connections, leases).
func (r *runner) putRound(ctx context.Context, c cluster, writers int, s slot) (Result, error) {
	tag := fmt.Sprintf("r%d", s.rep)
	ws := make([]writer, writers)
	defer func() {
		for _, w := range ws {
			if w != nil {
				w.close()
			}
		}
	}()
	group := func(w, i int) string { return fmt.Sprintf("bench-%s-%d-w%02d-%d.rpc", tag, writers, w, i/4096) }
	firstNode, leader := 0, -1
	if c.members() > 1 {
		l, err := c.leader(ctx)
		if err != nil {
			return Result{}, err
		}
		firstNode, leader = firstWriterNode(l, r.cfg.FirstOnLeader), l
	}
	for i := range ws {
		w, err := c.newWriter(ctx, (firstNode+i)%c.members())
		if err != nil {
			return Result{}, err
		}
		ws[i] = w
		if err := timed(ctx, func(ctx context.Context) error { return w.put(ctx, group(i, 0), "warmup", 0) }); err != nil {
			return Result{}, fmt.Errorf("warm-up write: %w", err)
		}
	}
	profiled := r.profileRound(ctx, c, leader, r.cfg.Duration,
		fmt.Sprintf("%s-%dn-%dw-r%d", s.system, c.members(), writers, s.rep))
	cpu0 := cpuSeconds(c)
	self0, selfErr := proc.SelfCPUTime()
	mallocs0, mallocsOK := mallocs(ctx, c)
	commit := r.leaderCommit(ctx, c, leader)
	load := closedLoop(ctx, writers, r.cfg.Duration, r.cfg.MaxOps, func(ctx context.Context, w, i int) error {
		return ws[w].put(ctx, group(w, i), fmt.Sprintf("i%08d", i), stampNow())
	})
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if err := profiled(); err != nil {
		return Result{}, err
	}
	sorted := load.lat.sorted()
	switch {
	case len(sorted) == 0 && load.first == nil:
		return Result{}, fmt.Errorf("no write started within the %s round: give the round more time (--duration)", r.cfg.Duration)
	case len(sorted) == 0:
		return Result{}, fmt.Errorf("no write succeeded: %w", load.first)
	}
	res := Result{Case: plural(writers, "writer")}
	res.metric("writes/s", load.rate())
	res.metric("p50 ms", quantileMS(sorted, 0.50))
	res.metric("p99 ms", quantileMS(sorted, 0.99))
	res.metric("server CPU us/write", (cpuSeconds(c)-cpu0)*1e6/float64(len(sorted)))
	if self1, err := proc.SelfCPUTime(); err == nil && selfErr == nil {
		// The clients' cost: on 2 cores a client that costs more per write
		// leaves less of the machine to the servers.
		res.metric("client CPU us/write", (self1-self0).Seconds()*1e6/float64(len(sorted)))
	}
	if m, ok := mallocs(ctx, c); ok && mallocsOK {
		res.metric("server allocs/write", (m-mallocs0)/float64(len(sorted)))
	}
	if ms, ok := commit(); ok {
		res.Metrics["leader commit ms (mean)"] = ms
		r.log.Info("leader commit", "system", s.system, "writers", writers, "mean ms", fmt.Sprintf("%.3f", ms))
	}
	// In the table, so that a round that lost writes does not pass for a
	// clean one by its rate alone.
	res.metric("writes failed", float64(load.failed))
	if load.failed > 0 {
		r.log.Warn("writes failed", "count", load.failed, "first", load.first)
	}
	return res, nil
}

// closedLoopResult is what closedLoop measured.
type closedLoopResult struct {
	lat    latencies // of the calls that succeeded
	within int       // of them, those that returned within the window
	window time.Duration
	failed int
	first  error // the first failure
}

// rate returns the calls that succeeded within the window per second of
// it. The calls in flight when the load's duration was over, which may
// take up to callTimeout to return, are in the latencies but not here:
// counting the wait for them as load time would understate the rate.
func (l *closedLoopResult) rate() float64 {
	if l.window <= 0 {
		return 0
	}
	return float64(l.within) / l.window.Seconds()
}

// closedLoop runs writers goroutines, each calling call(ctx, w, i) for
// its i-th call, the next once the last has returned, each bounded by
// callTimeout, until duration is over or maxOps calls were started over
// all of them; it waits for the calls in flight. The window its rate is
// measured over is duration, or the time until the last call returned
// when maxOps ended the load first.
func closedLoop(ctx context.Context, writers int, duration time.Duration, maxOps int,
	call func(ctx context.Context, w, i int) error) *closedLoopResult {
	var (
		res     closedLoopResult
		mu      sync.Mutex // guards res's counts
		started atomic.Int64
		wg      sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(duration)
	for w := range writers {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil && time.Now().Before(deadline) && started.Add(1) <= int64(maxOps); i++ {
				t := time.Now()
				err := timed(ctx, func(ctx context.Context) error { return call(ctx, w, i) })
				end := time.Now()
				mu.Lock()
				switch {
				case err != nil:
					res.failed++
					if res.first == nil {
						res.first = err
					}
				case !end.After(deadline):
					res.within++
				}
				mu.Unlock()
				if err == nil {
					res.lat.add(end.Sub(t))
				}
			}
		})
	}
	wg.Wait()
	res.window = min(time.Since(start), duration)
	return &res
}

// leaderCommit starts measuring the mean time the leader (member leader,
// 0 on one node) takes to commit and apply a write, when c reports it;
// done returns it in milliseconds over the writes since, ok false when c
// does not report it.
func (r *runner) leaderCommit(ctx context.Context, c cluster, leader int) (done func() (ms float64, ok bool)) {
	lc, ok := c.(leaderCommitter)
	leader = max(leader, 0)
	if !ok {
		return func() (float64, bool) { return 0, false }
	}
	sum0, n0, err := lc.commitSeconds(ctx, leader)
	return func() (float64, bool) {
		sum, n, err2 := lc.commitSeconds(ctx, leader)
		if err != nil || err2 != nil || n <= n0 {
			return 0, false
		}
		return (sum - sum0) / (n - n0) * 1e3, true
	}
}

// firstWriterNode is the node the first writer talks to, the others
// following round robin: the one after the leader, or the leader itself
// with onLeader. The caller takes it modulo the nodes.
func firstWriterNode(leader int, onLeader bool) int {
	if onLeader {
		return leader
	}
	return leader + 1
}

// timed calls fn with a context bounded by callTimeout.
func timed(ctx context.Context, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return fn(ctx)
}

// maxInFlight bounds the paced calls under way at once.
const maxInFlight = 256

// paced calls fn(i) for i in [0, n) at rate calls per second, open loop:
// the i-th starts at start + i/rate in its own goroutine, whether or not
// the earlier ones have returned (at most maxInFlight at once), so a slow
// call does not lower the rate. It returns once every call has, with the
// first error, and the rate achieved: the calls started per second, over
// the time from the first start to one interval after the last (n
// intervals when every call started on time). The wait for the last calls
// to return is not in it.
func paced(ctx context.Context, n, rate int, fn func(i int) error) (float64, error) {
	var (
		wg    sync.WaitGroup
		first atomic.Pointer[error]
		slots = make(chan struct{}, maxInFlight)
	)
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	var (
		begun     int
		lastStart time.Time
	)
	for i := range n {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			if err := proc.Sleep(ctx, wait); err != nil {
				break
			}
		}
		slots <- struct{}{}
		begun, lastStart = i+1, time.Now()
		wg.Go(func() {
			defer func() { <-slots }()
			if err := fn(i); err != nil {
				first.CompareAndSwap(nil, &err)
			}
		})
	}
	wg.Wait()
	achieved := 0.0
	if begun > 0 {
		achieved = float64(begun) / (lastStart.Sub(start) + interval).Seconds()
	}
	if err := ctx.Err(); err != nil {
		return achieved, err
	}
	if err := first.Load(); err != nil {
		return achieved, *err
	}
	return achieved, nil
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
