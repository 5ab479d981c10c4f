package registry

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zrpcio/zrpc/bench/internal/proc"
)

// Scale scenario constants: instances per service, concurrent loaders,
// reads measured, and the registry size from which quotas are raised.
const (
	scalePerService = 100
	scaleLoaders    = 32
	scaleReads      = 200
	scaleRaiseAbove = 100_000
	scaleSettle     = 5 * time.Second
)

// scale registers Instances TTL instances (lease-attached keys for etcd)
// on one node, 100 per service, then measures the node's memory, its CPU
// while idle, the latency of a linearizable read of one service, and the
// time from a restart (SIGTERM, start) to the first successful
// linearizable read.
func (r *runner) scale(ctx context.Context) error {
	var zrpcExtra, etcdExtra []string
	if r.cfg.Instances > scaleRaiseAbove {
		// docs/configuration.md: max_registry_bytes bounds all instances
		// together; etcd's backend quota is 2 GiB by default.
		zrpcExtra = []string{"--max-registry-bytes", "0"}
		etcdExtra = []string{"--quota-backend-bytes", strconv.Itoa(8 << 30)}
	}
	return r.eachRound(ctx, r.cfg.ScaleReps, 1, zrpcExtra, etcdExtra, func(ctx context.Context, s slot, c cluster) error {
		res, err := r.scaleRound(ctx, c)
		if err != nil {
			return err
		}
		res.Scenario, res.Topology, res.System, res.Rep = "scale", topology(1), s.system, s.rep
		res.Case = fmt.Sprintf("%d instances", r.cfg.Instances)
		return r.record(res)
	})
}

func scaleGroup(i int) string { return fmt.Sprintf("scale-%05d.rpc", i) }

func (r *runner) scaleRound(ctx context.Context, c cluster) (Result, error) {
	var res Result
	rate, err := r.scaleLoad(ctx, c)
	if err != nil {
		return res, err
	}
	res.metric("load writes/s", rate)
	if err := proc.Sleep(ctx, scaleSettle); err != nil {
		return res, err
	}
	p := c.process(0)
	if rss, err := p.RSS(); err == nil {
		res.metric("RSS MiB", float64(rss)/(1<<20))
	}
	cpu0, err := p.CPUTime()
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	if err := proc.Sleep(ctx, r.cfg.Idle); err != nil {
		return res, err
	}
	cpu1, err := p.CPUTime()
	if err != nil {
		return res, err
	}
	res.metric("idle CPU %", 100*(cpu1-cpu0).Seconds()/time.Since(t0).Seconds())
	if err := r.scaleReads(ctx, c, &res); err != nil {
		return res, err
	}
	ready, err := restartToRead(ctx, c, r.cfg.Instances/scalePerService)
	if err != nil {
		return res, err
	}
	res.metric("restart→ready s", ready.Seconds())
	if rss, err := c.process(0).RSS(); err == nil {
		res.metric("RSS after restart MiB", float64(rss)/(1<<20))
	}
	return res, nil
}

// scaleLoad registers the instances from scaleLoaders writers and returns
// the writes per second.
func (r *runner) scaleLoad(ctx context.Context, c cluster) (float64, error) {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	start := time.Now()
	for range scaleLoaders {
		w, err := c.newWriter(ctx, 0)
		if err != nil {
			return 0, err
		}
		wg.Go(func() {
			defer w.close()
			for i := int(next.Add(1)) - 1; i < r.cfg.Instances && ctx.Err() == nil; i = int(next.Add(1)) - 1 {
				err := timed(ctx, func(ctx context.Context) error {
					return w.put(ctx, scaleGroup(i/scalePerService), fmt.Sprintf("i%07d", i), stampNow())
				})
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("instance %d: %w", i, err))
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return 0, errs[0]
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return float64(r.cfg.Instances) / time.Since(start).Seconds(), nil
}

// scaleReads reads scaleReads services one after the other.
func (r *runner) scaleReads(ctx context.Context, c cluster, res *Result) error {
	w, err := c.newWriter(ctx, 0)
	if err != nil {
		return err
	}
	defer w.close()
	services := r.cfg.Instances / scalePerService
	var lat latencies
	for i := range scaleReads {
		t := time.Now()
		var n int
		err := timed(ctx, func(ctx context.Context) (err error) {
			n, err = w.read(ctx, scaleGroup((i*7919)%services))
			return err
		})
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if n != scalePerService {
			return fmt.Errorf("read %s: %d entries, want %d", scaleGroup((i*7919)%services), n, scalePerService)
		}
		lat.add(time.Since(t))
	}
	sorted := lat.sorted()
	res.metric("read p50 ms", quantileMS(sorted, 0.50))
	res.metric("read p99 ms", quantileMS(sorted, 0.99))

	t := time.Now()
	var (
		n     int
		first time.Duration
	)
	err = timed(ctx, func(ctx context.Context) (err error) {
		n, first, err = w.readAll(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("read everything: %w", err)
	}
	if n < r.cfg.Instances { // the cluster's start-up write is there too
		return fmt.Errorf("read everything: %d entries, want at least %d", n, r.cfg.Instances)
	}
	res.metric("list everything ms", float64(time.Since(t).Microseconds())/1000)
	res.metric("list everything, first entries ms", float64(first.Microseconds())/1000)
	return nil
}

// restartToRead stops node 0 with SIGTERM, starts it again and returns the
// time from the start to the first linearizable read that returns a whole
// service: the first port poll every 5 ms, then reads every 10 ms.
func restartToRead(ctx context.Context, c cluster, services int) (time.Duration, error) {
	if err := c.terminate(0); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := c.launch(0); err != nil {
		return 0, err
	}
	deadline := start.Add(readyTimeout)
	for {
		conn, err := net.DialTimeout("tcp", c.addr(0), time.Second)
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("restart: %s not listening after %s: %w", c.addr(0), readyTimeout, err)
		}
		if err := proc.Sleep(ctx, 5*time.Millisecond); err != nil {
			return 0, err
		}
	}
	w, err := c.newWriter(ctx, 0)
	if err != nil {
		return 0, err
	}
	defer w.close()
	for {
		var n int
		err := timed(ctx, func(ctx context.Context) (err error) {
			n, err = w.read(ctx, scaleGroup(services-1))
			return err
		})
		if err == nil && n == scalePerService {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("restart: no whole read within %s (last: %d entries, %v)", readyTimeout, n, err)
		}
		if err := proc.Sleep(ctx, 10*time.Millisecond); err != nil {
			return 0, err
		}
	}
}
