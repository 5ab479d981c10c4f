package security

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/bench/internal/proc"
)

func TestReportTableShowsMedianRangeAndRatio(t *testing.T) {
	r := &Report{
		Metrics: []string{"register 1w regs/s", "register 1w p99 ms"},
		Samples: map[string][]Sample{
			Plaintext: {{"register 1w regs/s": 1000, "register 1w p99 ms": 2}, {"register 1w regs/s": 1200, "register 1w p99 ms": 4}, {"register 1w regs/s": 900, "register 1w p99 ms": 3}},
			Secured:   {{"register 1w regs/s": 950, "register 1w p99 ms": 3}, {"register 1w regs/s": 800, "register 1w p99 ms": 5}, {"register 1w regs/s": 1000, "register 1w p99 ms": 3.3}},
		},
	}
	var b strings.Builder
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"1000 (900-1200)", "950 (800-1000)", "0.95x",
		"3.00 (2.00-4.00)", "3.30 (3.00-5.00)", "1.10x",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestConfigValidateNamesEveryBadField(t *testing.T) {
	err := Config{Reps: 0, Duration: 0, Warmup: -time.Second, MaxOps: 0, Callers: 0}.Validate()
	if err == nil {
		t.Fatal("an empty config validated")
	}
	for _, want := range []string{"binary zrpcd", "binary zrpcctl", "binary zrpcecho", "reps 0", "duration 0s", "warmup -1s", "max ops 0", "writers:", "callers 0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// TestRunEndToEnd builds the binaries and runs the whole benchmark for a
// moment: both modes, every metric. It starts real processes and takes
// tens of seconds, so it runs only with ZRPC_BENCH=1.
func TestRunEndToEnd(t *testing.T) {
	cfg := shortConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	noProcessesIn(t, cfg.Dir)
	for _, mode := range []string{Plaintext, Secured} {
		if len(rep.Samples[mode]) != 1 {
			t.Fatalf("%s: %d samples, want 1", mode, len(rep.Samples[mode]))
		}
		for _, m := range rep.Metrics {
			v, ok := rep.Samples[mode][0][m]
			switch {
			case !ok:
				t.Errorf("%s %s: not measured", mode, m)
			case strings.HasSuffix(m, "us/op"):
				// CPU time is read in 10 ms ticks: a short step may use none.
				if v < 0 {
					t.Errorf("%s %s = %v, want >= 0", mode, m, v)
				}
			case v <= 0:
				t.Errorf("%s %s = %v, want > 0", mode, m, v)
			}
		}
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + b.String())
}

// TestRunStopsItsProcessesOnError: when a run fails (here: the echo
// server cannot start) or is cancelled, Run returns with no agent or
// service process of its own left running.
func TestRunStopsItsProcessesOnError(t *testing.T) {
	t.Run("echo fails", func(t *testing.T) {
		cfg := shortConfig(t)
		cfg.Bins.Echo = "/bin/false"
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if _, err := Run(ctx, cfg); err == nil || !strings.Contains(err.Error(), "zrpcecho exited") {
			t.Fatalf("Run = %v, want the echo server's failure", err)
		}
		noProcessesIn(t, cfg.Dir)
	})
	t.Run("cancelled", func(t *testing.T) {
		cfg := shortConfig(t)
		cfg.Duration = time.Minute
		cfg.MaxOps = 1 << 30
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := Run(ctx, cfg)
			done <- err
		}()
		// Cancel once the first agent is under load.
		deadline := time.Now().Add(time.Minute)
		for !agentServedRegistrations(t, cfg.Dir) {
			if time.Now().After(deadline) {
				t.Fatal("no agent served a registration within a minute")
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
		noProcessesIn(t, cfg.Dir)
	})
}

// agentServedRegistrations reports whether an agent started under dir
// has answered a registration (its /metrics, at the --http-port of its
// command line).
func agentServedRegistrations(t *testing.T, dir string) bool {
	pids, err := proc.ProcessesUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		b, err := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		i := slices.Index(args, "--http-port")
		if i < 0 || i+1 >= len(args) {
			continue
		}
		resp, err := http.Get("http://127.0.0.1:" + args[i+1] + "/metrics")
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for line := range strings.Lines(string(body)) {
			if strings.HasPrefix(line, "zrpc_grpc_server_handled_total") && strings.Contains(line, "Registry/Register") && !strings.HasSuffix(line, " 0\n") {
				return true
			}
		}
	}
	return false
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// shortConfig is a config of one short repetition, with the binaries
// built once per test binary; it skips the test without ZRPC_BENCH=1.
func shortConfig(t *testing.T) Config {
	t.Helper()
	if os.Getenv("ZRPC_BENCH") != "1" {
		t.Skip("set ZRPC_BENCH=1 to run the out-of-process benchmark")
	}
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "zrpc-bench-bin-"); binErr != nil {
			return
		}
		for _, b := range []struct{ dir, name, pkg string }{
			{"../..", "zrpcd", "./cmd/zrpcd"}, {"../..", "zrpcctl", "./cmd/zrpcctl"}, {"..", "zrpcecho", "./cmd/zrpcecho"},
		} {
			if binErr = proc.GoBuild(b.dir, filepath.Join(binDir, b.name), b.pkg); binErr != nil {
				return
			}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return Config{
		Bins:     Binaries{Zrpcd: filepath.Join(binDir, "zrpcd"), Zrpcctl: filepath.Join(binDir, "zrpcctl"), Echo: filepath.Join(binDir, "zrpcecho")},
		Reps:     1,
		Duration: 200 * time.Millisecond,
		Warmup:   100 * time.Millisecond,
		MaxOps:   500,
		Writers:  []int{1, 4},
		Callers:  4,
		Dir:      t.TempDir(),
		Log:      slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func noProcessesIn(t *testing.T, dir string) {
	t.Helper()
	if runtime.GOOS != "linux" {
		return
	}
	pids, err := proc.ProcessesUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) > 0 {
		t.Errorf("processes started by Run still run: pids %v", pids)
	}
}

// testWriter sends the run's progress to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
