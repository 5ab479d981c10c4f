// Package registry compares zrpc's service registry with etcd 3.4's, both
// measured from outside: zrpcd agents and etcd members run as their own
// processes on loopback (fresh data dirs, fsync on, default settings) and
// this process is the load generator. Each scenario alternates the
// systems round by round (zrpc, etcd, zrpc, etcd, ...) with a fresh
// cluster per repetition, and the report gives each system's median with
// min-max and the ratio of the medians. cmd/zrpcregbench is its command
// line; `make bench-registry` runs it.
//
// Scenarios: puts (registrations of TTL instances vs lease-attached puts
// at 1/16/64 writers), watch (write→event latency at a fixed rate on one
// node and across members), fanout (thousands of watchers on one node),
// failover (leader kill -9, and leader SIGSTOP with the writer on a
// follower → next successful write), partition (the leader, then a
// follower, cut off by the network for 12 s from the other members, with
// the writer or without; each member on a network namespace of its own;
// needs root) and scale (a large
// registry's memory, idle CPU, read latency and restart time).
//
// It measures and prints; it decides nothing from the numbers.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/zrpcio/zrpc/bench/internal/proc"
	"github.com/zrpcio/zrpc/internal/netlab"
)

// Phases, in the order a run takes them.
var Phases = []string{"puts", "watch", "fanout", "failover", "partition", "scale"}

// loadWarn is the one-minute load average above which the report warns
// that other work on the machine makes the numbers unreliable.
const loadWarn = 1.5

// Config says what to run. Default and Quick fill it.
type Config struct {
	// Zrpcd and Etcd are the binaries.
	Zrpcd, Etcd string
	// Systems are the systems compared, in the order each repetition runs
	// them; the table shows the first's ratio to the second.
	Systems []string
	// Phases are the scenarios to run (of Phases).
	Phases []string
	// Nodes are the cluster sizes of puts and watch (1 and 3).
	Nodes []int
	// Reps is how often each system runs each scenario; ScaleReps for the
	// scale scenario, whose round takes a minute.
	Reps, ScaleReps int
	// Settle is the pause between a cluster's start and its first round.
	Settle time.Duration
	// Duration and MaxOps bound one puts round; Writers are its rounds.
	Duration time.Duration
	MaxOps   int
	Writers  []int
	// Rate is the writes per second of watch, fanout and failover;
	// WatchEvents the writes of one watch round.
	Rate        int
	WatchEvents int
	// WatchStages adds to each watch round where a write's time to its
	// event goes: its acknowledgement and, with the watcher on a
	// follower, its event on a second watcher on the leader.
	WatchStages bool
	// FanoutServices × FanoutWatchers watchers over FanoutConns client
	// connections, on one node; FanoutWrites writes spread over the
	// services.
	FanoutServices, FanoutWatchers, FanoutConns, FanoutWrites int
	// FailoverKills is how often each cluster's leader is killed, and
	// then stopped.
	FailoverKills int
	// PartitionHold is how long each cut of the partition scenario lasts.
	PartitionHold time.Duration
	// Instances is the scale scenario's registry size; Idle how long its
	// idle CPU is measured.
	Instances int
	Idle      time.Duration
	// Dir holds the clusters' data dirs, each removed when its cluster
	// stops, and the process logs, kept; empty means a temporary
	// directory, removed at the end.
	Dir string
	// FirstOnLeader starts the puts writers' spread over several nodes at
	// the leader instead of a follower (to tell the forward hop's share of
	// a write's latency).
	FirstOnLeader bool
	// Profile, when set, is a directory that receives a CPU profile of
	// every zrpcd agent over each puts round (pprof format, one file per
	// round and agent, named for system, nodes, writers, repetition,
	// agent and role).
	Profile string
	// Log receives progress; nil discards it.
	Log *slog.Logger
}

// Default is the full run (about 14 minutes on 2 cores); without root
// (network namespaces) it leaves out the partition scenario.
func Default() Config {
	phases := Phases
	if netlab.Available() != nil {
		phases = slices.DeleteFunc(slices.Clone(Phases), func(p string) bool { return p == "partition" })
	}
	return Config{
		Systems: []string{Zrpc, Etcd}, Phases: phases, Nodes: []int{1, 3},
		Reps: 3, ScaleReps: 1, Settle: 2 * time.Second,
		Duration: 5 * time.Second, MaxOps: 100_000, Writers: []int{1, 16, 64},
		Rate: 200, WatchEvents: 1000,
		FanoutServices: 1000, FanoutWatchers: 10, FanoutConns: 100, FanoutWrites: 1000,
		FailoverKills: 1, PartitionHold: 12 * time.Second, Instances: 100_000, Idle: 20 * time.Second,
	}
}

// Quick is a smoke test of every scenario (about 3 minutes): one
// repetition, short rounds, a tenth of the watchers and instances.
func Quick() Config {
	c := Default()
	c.Reps, c.Settle, c.Duration = 1, time.Second, time.Second
	c.WatchEvents = 200
	c.FanoutServices, c.FanoutConns, c.FanoutWrites = 100, 20, 200
	c.Instances, c.Idle = 10_000, 5*time.Second
	return c
}

// Validate reports every bad field at once.
func (c Config) Validate() error {
	var errs []error
	bins := map[string]string{Zrpc: c.Zrpcd, Etcd: c.Etcd}
	for _, s := range c.Systems {
		path, ok := bins[s]
		if !ok {
			errs = append(errs, fmt.Errorf("systems: unknown system %q (want %s, %s)", s, Zrpc, Etcd))
		} else if err := proc.CheckBinary(path); err != nil {
			errs = append(errs, fmt.Errorf("binary of %s: %w", s, err))
		}
	}
	if len(c.Systems) == 0 {
		errs = append(errs, errors.New("systems: want at least one"))
	}
	for _, p := range c.Phases {
		if !slices.Contains(Phases, p) {
			errs = append(errs, fmt.Errorf("phases: unknown phase %q (want some of %v)", p, Phases))
		}
	}
	for _, n := range c.Nodes {
		if n != 1 && n != 3 {
			errs = append(errs, fmt.Errorf("nodes %d: want 1 or 3", n))
		}
	}
	positive := []struct {
		name string
		v    int
	}{{"reps", c.Reps}, {"scale reps", c.ScaleReps}, {"max ops", c.MaxOps}, {"rate", c.Rate},
		{"watch events", c.WatchEvents}, {"fanout services", c.FanoutServices}, {"fanout watchers", c.FanoutWatchers},
		{"fanout conns", c.FanoutConns}, {"fanout writes", c.FanoutWrites}, {"failover kills", c.FailoverKills},
		{"instances", c.Instances}}
	for _, p := range positive {
		if p.v < 1 {
			errs = append(errs, fmt.Errorf("%s %d: want at least 1", p.name, p.v))
		}
	}
	if c.Duration <= 0 || c.Idle <= 0 || c.Settle < 0 || c.PartitionHold <= 0 {
		errs = append(errs, fmt.Errorf("duration %s, idle %s, settle %s, partition hold %s: want positive durations (settle may be 0)",
			c.Duration, c.Idle, c.Settle, c.PartitionHold))
	}
	if slices.Contains(c.Phases, "partition") {
		if err := netlab.Available(); err != nil {
			errs = append(errs, fmt.Errorf("phases: partition runs each member in a network namespace of its own: %w", err))
		}
	}
	if len(c.Writers) == 0 {
		errs = append(errs, errors.New("writers: want at least one count"))
	}
	for _, w := range c.Writers {
		if w < 1 || w > 1024 {
			errs = append(errs, fmt.Errorf("writers %d: want 1 to 1024", w))
		}
	}
	return errors.Join(errs...)
}

// runner runs one benchmark.
type runner struct {
	cfg    Config
	dir    string
	log    *slog.Logger
	rep    *Report
	rounds int // clusters started, to name their dirs
}

// Run runs cfg's phases and adds their results to rep. Every process it
// starts is stopped, and its data removed, before it returns: also on
// error and when ctx is cancelled.
func Run(ctx context.Context, cfg Config, rep *Report) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	r := &runner{cfg: cfg, log: cfg.Log, rep: rep}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.dir = cfg.Dir
	if r.dir == "" {
		tmp, err := os.MkdirTemp("", "zrpc-bench-registry-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		r.dir = tmp
	}
	rep.LoadStart = loadAverage(r.log, "start")
	defer func() { rep.LoadEnd = loadAverage(r.log, "end") }()
	phases := map[string]func(context.Context) error{
		"puts": r.puts, "watch": r.watch, "fanout": r.fanout, "failover": r.failover, "partition": r.partition, "scale": r.scale,
	}
	for _, p := range Phases {
		if !slices.Contains(cfg.Phases, p) {
			continue
		}
		r.log.Info("phase", "name", p)
		if err := phases[p](ctx); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

// loadAverage reads the one-minute load average and warns above loadWarn.
func loadAverage(log *slog.Logger, when string) float64 {
	l, err := proc.LoadAverage()
	if err != nil {
		log.Warn("load average unknown", "err", err)
		return 0
	}
	if l > loadWarn {
		log.Warn("machine busy: results unreliable", "when", when, "load1", l)
	}
	return l
}

// system returns the named system, with extra flags for each.
func (r *runner) system(name string, zrpcExtra, etcdExtra []string) system {
	if name == Zrpc {
		return zrpcSystem{bin: r.cfg.Zrpcd, extra: zrpcExtra}
	}
	return etcdSystem{bin: r.cfg.Etcd, extra: etcdExtra}
}

// eachRound runs fn once per repetition and system, interleaved, each time
// on a fresh cluster of nodes members on loopback that has settled; the
// cluster is stopped and its data removed after fn, whatever happens.
func (r *runner) eachRound(ctx context.Context, reps, nodes int, zrpcExtra, etcdExtra []string,
	fn func(ctx context.Context, s slot, c cluster) error) error {
	return r.eachRoundOn(ctx, loopback{}, reps, nodes, zrpcExtra, etcdExtra, fn)
}

// eachRoundOn is eachRound with the clusters on nw.
func (r *runner) eachRoundOn(ctx context.Context, nw network, reps, nodes int, zrpcExtra, etcdExtra []string,
	fn func(ctx context.Context, s slot, c cluster) error) error {
	for _, s := range interleave(reps, r.cfg.Systems) {
		r.rounds++
		dir := filepath.Join(r.dir, strconv.Itoa(r.rounds)+"-"+s.system)
		log := r.log.With("system", s.system, "rep", s.rep, "nodes", nodes)
		log.Info("starting cluster")
		c, err := r.system(s.system, zrpcExtra, etcdExtra).start(ctx, nw, dir, nodes)
		if err != nil {
			return fmt.Errorf("%s, repetition %d: %w", s.system, s.rep, err)
		}
		err = proc.Sleep(ctx, r.cfg.Settle)
		if err == nil {
			err = fn(ctx, s, c)
		}
		stopping := time.Now()
		cerr := c.close()
		log.Info("cluster stopped", "took", time.Since(stopping).Round(time.Millisecond))
		if err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s, repetition %d: %w", s.system, s.rep, err)
		}
	}
	return nil
}

// record stamps res with the time and the load average and adds it.
func (r *runner) record(res Result) error {
	res.Time = time.Now().UTC()
	res.Load1, _ = proc.LoadAverage()
	args := []any{"scenario", res.Scenario, "topology", res.Topology, "case", res.Case, "system", res.System, "rep", res.Rep}
	for _, m := range res.Order {
		args = append(args, m, strconv.FormatFloat(res.Metrics[m], 'f', 2, 64))
	}
	r.log.Info("result", args...)
	return r.rep.add(res)
}

func topology(nodes int) string {
	if nodes == 1 {
		return "1 node"
	}
	return strconv.Itoa(nodes) + " nodes"
}

// cpuSeconds is the CPU time all of c's running members used so far.
func cpuSeconds(c cluster) float64 {
	var s float64
	for i := range c.members() {
		if d, err := c.process(i).CPUTime(); err == nil {
			s += d.Seconds()
		}
	}
	return s
}
