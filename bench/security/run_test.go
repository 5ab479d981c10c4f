package security

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	if os.Getenv("ZRPC_BENCH") != "1" {
		t.Skip("set ZRPC_BENCH=1 to run the out-of-process benchmark end to end")
	}
	bin := t.TempDir()
	build(t, "../..", filepath.Join(bin, "zrpcd"), "./cmd/zrpcd")
	build(t, "../..", filepath.Join(bin, "zrpcctl"), "./cmd/zrpcctl")
	build(t, "..", filepath.Join(bin, "zrpcecho"), "./cmd/zrpcecho")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{
		Bins:     Binaries{Zrpcd: filepath.Join(bin, "zrpcd"), Zrpcctl: filepath.Join(bin, "zrpcctl"), Echo: filepath.Join(bin, "zrpcecho")},
		Reps:     1,
		Duration: 200 * time.Millisecond,
		Warmup:   100 * time.Millisecond,
		MaxOps:   500,
		Writers:  []int{1, 4},
		Callers:  4,
		Dir:      t.TempDir(),
		Log:      slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
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

func build(t *testing.T, dir, out, pkg string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

// testWriter sends the run's progress to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
