package registry

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/bench/internal/proc"
	"github.com/zrpcio/zrpc/internal/testlog"
)

var (
	zrpcdOnce sync.Once
	zrpcdPath string
	zrpcdErr  error
)

// tinyConfig runs every scenario for a moment: zrpcd built once per test
// binary, etcd from PATH when there is one (else zrpc alone). It skips the
// test without ZRPC_BENCH=1: it starts real processes for tens of seconds.
func tinyConfig(t *testing.T) Config {
	t.Helper()
	if os.Getenv("ZRPC_BENCH") != "1" {
		t.Skip("set ZRPC_BENCH=1 to run the out-of-process benchmark")
	}
	zrpcdOnce.Do(func() {
		dir, err := os.MkdirTemp("", "zrpc-bench-bin-")
		if err != nil {
			zrpcdErr = err
			return
		}
		zrpcdPath = filepath.Join(dir, "zrpcd")
		zrpcdErr = proc.GoBuild("../..", zrpcdPath, "./cmd/zrpcd")
	})
	if zrpcdErr != nil {
		t.Fatal(zrpcdErr)
	}
	c := Default()
	c.Zrpcd, c.Systems = zrpcdPath, []string{Zrpc}
	if etcd, err := exec.LookPath("etcd"); err == nil {
		c.Etcd, c.Systems = etcd, []string{Zrpc, Etcd}
	} else {
		t.Log("no etcd in PATH: zrpc alone")
	}
	c.Reps, c.Settle, c.Duration, c.Writers = 1, 100*time.Millisecond, 300*time.Millisecond, []int{1, 4}
	c.WatchEvents, c.WatchStages = 50, true
	c.FanoutServices, c.FanoutWatchers, c.FanoutConns, c.FanoutWrites = 10, 3, 4, 30
	c.Instances, c.Idle = 500, time.Second
	c.PartitionHold = 3 * time.Second
	c.Dir = t.TempDir()
	c.Log = testlog.New(t, "")
	return c
}

func TestMain(m *testing.M) {
	code := m.Run()
	if zrpcdPath != "" {
		os.RemoveAll(filepath.Dir(zrpcdPath))
	}
	os.Exit(code)
}

// TestRunEndToEnd runs every scenario against real processes: every
// system measures every case, no event is lost, and nothing it started
// still runs or keeps its data afterwards.
func TestRunEndToEnd(t *testing.T) {
	cfg := tinyConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep := NewReport(cfg.Systems, nil)
	if err := Run(ctx, cfg, rep); err != nil {
		t.Fatal(err)
	}
	noneLeft(t, cfg.Dir)
	cases := map[string][]string{} // by system: scenario/topology/case
	for _, res := range rep.Results {
		cases[res.System] = append(cases[res.System], res.Scenario+"/"+res.Topology+"/"+res.Case)
		for _, m := range res.Order {
			// An event may come before its write's acknowledgement or
			// before the leader's event: those stages may be negative.
			mayBeNegative := strings.HasPrefix(m, "stage: event after")
			if v := res.Metrics[m]; (v < 0 && !mayBeNegative) || (m == "events lost" && v != 0) {
				t.Errorf("%s %s %s: %s = %v", res.System, res.Scenario, res.Case, m, v)
			}
		}
		if res.Scenario == "watch" && !slices.Contains(res.Order, "stage: write acknowledged p50 ms") {
			t.Errorf("%s watch %s: no stage rows: %v", res.System, res.Case, res.Order)
		}
		if res.Scenario == "puts" && res.Metrics["writes/s"] == 0 {
			t.Errorf("%s %s %s: no writes", res.System, res.Topology, res.Case)
		}
	}
	// puts 2 nodes × 2 writer counts, watch 1 + 2 cases, fanout, failover
	// 2 cases (kill, stop), partition 4 cases (with root), scale
	want := 4 + 3 + 1 + 2 + 1
	if slices.Contains(cfg.Phases, "partition") {
		want += len(partitionCases)
	}
	for _, s := range cfg.Systems {
		if len(cases[s]) != want {
			t.Errorf("%s measured %d cases, want %d: %v", s, len(cases[s]), want, cases[s])
		}
	}
	var b strings.Builder
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + b.String())
}

// TestRunStopsEverythingWhenCancelled cancels a run in its first round:
// Run returns the cancellation and leaves no process or data behind.
func TestRunStopsEverythingWhenCancelled(t *testing.T) {
	cfg := tinyConfig(t)
	cfg.Phases, cfg.Duration = []string{"puts"}, time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, NewReport(cfg.Systems, nil)) }()
	deadline := time.Now().Add(time.Minute)
	for {
		pids, err := proc.ProcessesUnder(cfg.Dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(pids) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no process started within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v, want context.Canceled", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return within a minute of its cancellation")
	}
	noneLeft(t, cfg.Dir)
}

// noneLeft fails when a process started under dir still runs or a data
// dir is left there.
func noneLeft(t *testing.T, dir string) {
	t.Helper()
	if pids, err := proc.ProcessesUnder(dir); err != nil || len(pids) > 0 {
		t.Errorf("processes started by Run still run: pids %v (%v)", pids, err)
	}
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == "data" {
			t.Errorf("data dir left: %s", path)
		}
		return nil
	})
}

// TestPutsProfilesEveryAgent takes a CPU profile of each agent over a
// puts round with Config.Profile: one file per agent, named for its role,
// each a gzipped pprof profile.
func TestPutsProfilesEveryAgent(t *testing.T) {
	cfg := tinyConfig(t)
	cfg.Systems, cfg.Phases, cfg.Nodes, cfg.Writers = []string{Zrpc}, []string{"puts"}, []int{3}, []int{2}
	cfg.Duration = time.Second
	cfg.Profile = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := Run(ctx, cfg, NewReport(cfg.Systems, nil)); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(cfg.Profile, "zrpc-3n-2w-r1-*.pprof"))
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Errorf("%s is not a gzipped profile (%d bytes)", f, len(b))
		}
		roles[strings.TrimSuffix(filepath.Base(f)[len("zrpc-3n-2w-r1-")+2:], ".pprof")]++
	}
	if len(files) != 3 || roles["leader"] != 1 || roles["follower"] != 2 {
		t.Fatalf("profiles %v, want one of the leader and two of followers", files)
	}
}
