// Command zrpcregbench compares zrpc's service registry with etcd 3.4's
// from its own process: zrpcd agents and etcd members run as separate
// processes on loopback with fresh data dirs (the partition scenario: each
// in a network namespace of its own, which needs root), and each scenario
// (puts, watch, fanout, failover, partition, scale) alternates the
// systems round by round with a fresh cluster per repetition. It prints a markdown table (median
// with min-max per system, the ratio of the medians zrpc/etcd) and writes
// every round as a JSON line to --out.
//
//	make build
//	go run ./cmd/zrpcregbench --bin ../bin --out /tmp/registry.jsonl
//	go run ./cmd/zrpcregbench --bin ../bin --quick --phases puts,watch
//
// `make bench-registry` in the repository root builds zrpcd, installs etcd
// when it is missing, and runs the defaults.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/zrpcio/zrpc/bench/registry"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "zrpcregbench:", err)
		os.Exit(1)
	}
}

func run() error {
	// --quick changes the defaults of the other flags, so it is looked
	// for before they are declared; flags given with it still win.
	cfg := registry.Default()
	if slices.ContainsFunc(os.Args[1:], func(a string) bool {
		return a == "--quick" || a == "-quick" || a == "--quick=true" || a == "-quick=true"
	}) {
		cfg = registry.Quick()
	}
	var bin, etcd, out, systems, phases, nodes, writers string
	flag.Bool("quick", false, "one repetition of short rounds with a tenth of the watchers and instances (about 3 minutes)")
	flag.StringVar(&bin, "bin", "bin", "directory holding zrpcd")
	flag.StringVar(&etcd, "etcd", "", "etcd binary (default: etcd from PATH)")
	flag.StringVar(&out, "out", "", "append every round's result as a JSON line to this file")
	flag.StringVar(&systems, "systems", strings.Join(cfg.Systems, ","), "systems compared, in the order each repetition runs them")
	flag.StringVar(&phases, "phases", strings.Join(cfg.Phases, ","), "scenarios to run: "+strings.Join(registry.Phases, ","))
	flag.StringVar(&nodes, "nodes", "1,3", "cluster sizes of puts and watch")
	flag.IntVar(&cfg.Reps, "reps", cfg.Reps, "repetitions of each system per scenario (A/B/A/B...)")
	flag.IntVar(&cfg.ScaleReps, "scale-reps", cfg.ScaleReps, "repetitions of the scale scenario")
	flag.DurationVar(&cfg.Settle, "settle", cfg.Settle, "pause after a cluster starts")
	flag.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of each puts round")
	flag.IntVar(&cfg.MaxOps, "max-ops", cfg.MaxOps, "most writes of each puts round")
	flag.StringVar(&writers, "writers", "1,16,64", "concurrent writers, one puts round each")
	flag.IntVar(&cfg.Rate, "rate", cfg.Rate, "writes per second of watch and fanout")
	flag.IntVar(&cfg.WatchEvents, "watch-events", cfg.WatchEvents, "writes of each watch round")
	flag.BoolVar(&cfg.WatchStages, "watch-stages", false, "in watch rounds, also time each write's acknowledgement and, with the watcher on a follower, its event on a second watcher on the leader, and print where the time goes (stage: rows; the leader's watcher adds a little load)")
	flag.IntVar(&cfg.FanoutServices, "fanout-services", cfg.FanoutServices, "services watched in the fanout round")
	flag.IntVar(&cfg.FanoutWatchers, "fanout-watchers", cfg.FanoutWatchers, "watchers of each service")
	flag.IntVar(&cfg.FanoutConns, "fanout-conns", cfg.FanoutConns, "client connections the watchers share")
	flag.IntVar(&cfg.FanoutWrites, "fanout-writes", cfg.FanoutWrites, "writes of the fanout round")
	flag.IntVar(&cfg.FailoverKills, "failover-kills", cfg.FailoverKills, "leader kills, and then stops, per failover cluster")
	flag.DurationVar(&cfg.PartitionHold, "partition-hold", cfg.PartitionHold, "how long each cut of the partition scenario lasts (it needs root: a network namespace per member)")
	flag.IntVar(&cfg.Instances, "instances", cfg.Instances, "instances of the scale scenario (above 100000 the registry quotas are raised)")
	flag.DurationVar(&cfg.Idle, "idle", cfg.Idle, "how long the scale scenario measures idle CPU")
	flag.StringVar(&cfg.Dir, "dir", "", "keep data dirs and process logs here (default: a temporary directory, removed)")
	flag.BoolVar(&cfg.FirstOnLeader, "first-on-leader", false, "on several nodes, spread the puts writers starting at the leader instead of a follower (one writer then writes to the leader on both systems)")
	flag.StringVar(&cfg.Profile, "profile", "", "write a CPU profile of every zrpcd agent over each puts round into this directory")
	loadGOGC := flag.Int("load-gogc", 400, "GOGC of this load generator (not of the systems it starts): its collections would otherwise delay the events it times, more often the less memory its clients hold")
	flag.Parse()
	debug.SetGCPercent(*loadGOGC)

	var err error
	cfg.Systems = strings.Split(systems, ",")
	cfg.Phases = strings.Split(phases, ",")
	if cfg.Nodes, err = ints("nodes", nodes); err != nil {
		return err
	}
	if cfg.Writers, err = ints("writers", writers); err != nil {
		return err
	}
	cfg.Zrpcd = filepath.Join(bin, "zrpcd")
	if cfg.Etcd = etcd; cfg.Etcd == "" {
		if cfg.Etcd, err = exec.LookPath("etcd"); err != nil {
			cfg.Etcd = "etcd (not found in PATH: apt-get install etcd-server)"
		}
	}
	if cfg.Profile != "" {
		if err := os.MkdirAll(cfg.Profile, 0o755); err != nil {
			return fmt.Errorf("--profile: %w", err)
		}
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))

	var jsonl io.Writer // stays a nil interface without --out
	if out != "" {
		f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		jsonl = f
	}
	rep := registry.NewReport(cfg.Systems, jsonl)
	// SIGINT or SIGTERM cancels the run; Run stops its processes first.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = registry.Run(ctx, cfg, rep)
	if len(rep.Results) > 0 {
		if werr := rep.WriteMarkdown(os.Stdout); werr != nil && err == nil {
			err = werr
		}
		fmt.Printf("\nratio: zrpc median / etcd median (rates: above 1 favours zrpc; latencies, CPU, memory, time: below 1 does).\n")
		fmt.Printf("load average (1 min): %.2f at start, %.2f at end", rep.LoadStart, rep.LoadEnd)
		if max(rep.LoadStart, rep.LoadEnd) > 1.5 {
			fmt.Print(" - WARNING: above 1.5, other work shared the machine; results unreliable")
		}
		fmt.Println()
	}
	return err
}

func ints(name, s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("--%s %q: %w", name, s, err)
		}
		out = append(out, n)
	}
	return out, nil
}
