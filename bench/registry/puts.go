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
	var (
		lat     latencies
		started atomic.Int64
		failed  atomic.Int64
		first   atomic.Pointer[error]
		wg      sync.WaitGroup
	)
	profiled := r.profileRound(ctx, c, leader, r.cfg.Duration,
		fmt.Sprintf("%s-%dn-%dw-r%d", s.system, c.members(), writers, s.rep))
	cpu0 := cpuSeconds(c)
	self0, selfErr := proc.SelfCPUTime()
	mallocs0, mallocsOK := mallocs(ctx, c)
	commit := r.leaderCommit(ctx, c, leader)
	start := time.Now()
	deadline := start.Add(r.cfg.Duration)
	for w := range ws {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil && time.Now().Before(deadline) && started.Add(1) <= int64(r.cfg.MaxOps); i++ {
				t := time.Now()
				err := timed(ctx, func(ctx context.Context) error {
					return ws[w].put(ctx, group(w, i), fmt.Sprintf("i%08d", i), t.UnixNano())
				})
				if err != nil {
					failed.Add(1)
					first.CompareAndSwap(nil, &err)
					continue
				}
				lat.add(time.Since(t))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if err := profiled(); err != nil {
		return Result{}, err
	}
	sorted := lat.sorted()
	if len(sorted) == 0 {
		return Result{}, fmt.Errorf("no write succeeded: %w", *first.Load())
	}
	res := Result{Case: plural(writers, "writer")}
	res.metric("writes/s", float64(len(sorted))/elapsed.Seconds())
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
	res.metric("writes failed", float64(failed.Load()))
	if n := failed.Load(); n > 0 {
		r.log.Warn("writes failed", "count", n, "first", *first.Load())
	}
	return res, nil
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
// first error, and the rate achieved.
func paced(ctx context.Context, n, rate int, fn func(i int) error) (float64, error) {
	var (
		wg    sync.WaitGroup
		first atomic.Pointer[error]
		slots = make(chan struct{}, maxInFlight)
	)
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	for i := range n {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			if err := proc.Sleep(ctx, wait); err != nil {
				break
			}
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := fn(i); err != nil {
				first.CompareAndSwap(nil, &err)
			}
		})
	}
	wg.Wait()
	achieved := float64(n) / time.Since(start).Seconds()
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
