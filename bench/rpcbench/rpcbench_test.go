package rpcbench

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/bench/internal/proc"
)

func TestRoundsRunEverySystemAtEveryCallerCountRotatingTheOrder(t *testing.T) {
	got := rounds(3, []int{1, 64}, Systems)
	if len(got) != 3*2*len(Systems) {
		t.Fatalf("%d rounds, want %d", len(got), 3*2*len(Systems))
	}
	seen := map[Round]bool{}
	for _, r := range got {
		if seen[r] {
			t.Errorf("round %+v twice", r)
		}
		seen[r] = true
	}
	first := map[int]string{}
	for _, r := range got {
		if _, ok := first[r.Rep]; !ok {
			first[r.Rep] = r.System
		}
	}
	if first[1] == first[2] || first[2] == first[3] {
		t.Errorf("repetitions start with %v, want a different system each time", first)
	}
}

func TestSummarizeGivesMedianMinAndMax(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want Summary
	}{
		{[]float64{3, 1, 2}, Summary{Median: 2, Min: 1, Max: 3, N: 3}},
		{[]float64{4, 1, 3, 2}, Summary{Median: 2.5, Min: 1, Max: 4, N: 4}},
		{nil, Summary{}},
	} {
		if got := Summarize(c.in); got != c.want {
			t.Errorf("Summarize(%v) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

func sample(rep int, system string, calls int64, cpu float64) Sample {
	return Sample{Round: Round{Rep: rep, System: system, Callers: 16},
		Result:       Result{Calls: calls, Seconds: 1, CPUSeconds: cpu, Allocs: uint64(calls) * 80, Sleeps: calls},
		ServerSleeps: calls / 2}
}

func TestTableShowsRatiosWithinEachRepetition(t *testing.T) {
	// grpc-go drifts from 1000 to 2000 calls/s between repetitions; zrpc
	// runs at 0.9 of it in both, which a ratio of medians would not show.
	samples := []Sample{
		sample(1, GRPC, 1000, 0.02), sample(1, Zrpc, 900, 0.02), sample(1, GoZero, 450, 0.04),
		sample(2, GRPC, 2000, 0.04), sample(2, Zrpc, 1800, 0.04), sample(2, GoZero, 900, 0.08),
	}
	var b strings.Builder
	if err := WriteTable(&b, samples); err != nil {
		t.Fatal(err)
	}
	var zrpcRow string
	for line := range strings.SplitSeq(b.String(), "\n") {
		if strings.HasPrefix(line, "| 16 | zrpc |") {
			zrpcRow = line
		}
	}
	cells := strings.Split(zrpcRow, "|")
	if len(cells) < 10 {
		t.Fatalf("no zrpc row in\n%s", b.String())
	}
	want := []string{"1350 (900–1800)", "0.90 (0.90–0.90)", "2.00 (2.00–2.00)", "22.2 (22.2–22.2)", "1.11 (1.11–1.11)", "80.0 (80.0–80.0)", "1.50 (1.50–1.50)"}
	for i, w := range want {
		if got := strings.TrimSpace(cells[3+i]); got != w {
			t.Errorf("zrpc column %d = %q, want %q\n%s", i+3, got, w, b.String())
		}
	}
}

func TestBaseBuildRunsAsASystemOfItsOwnAndIsComparedWithZrpc(t *testing.T) {
	bins := Binaries{Zrpcd: "a", Echo: "b", Self: "c"}
	if got := (Config{Bins: bins}).systems(); slices.Contains(got, ZrpcBase) {
		t.Errorf("systems without a base build = %v, want no %s", got, ZrpcBase)
	}
	if got := (Config{Bins: bins, Base: bins}).systems(); !slices.Contains(got, ZrpcBase) || len(got) != len(Systems)+1 {
		t.Errorf("systems with a base build = %v, want %v and %s", got, Systems, ZrpcBase)
	}
	if got := (Config{Bins: bins, Base: bins, Systems: []string{Zrpc, ZrpcBase}}).systems(); !slices.Equal(got, []string{Zrpc, ZrpcBase}) {
		t.Errorf("systems asked for zrpc and zrpc-base = %v", got)
	}

	// The base build drifts from 1000 to 2000 calls/s between
	// repetitions; zrpc runs at 1.1 of it in both.
	samples := []Sample{
		sample(1, ZrpcBase, 1000, 0.02), sample(1, Zrpc, 1100, 0.02), sample(1, GRPC, 1200, 0.02),
		sample(2, ZrpcBase, 2000, 0.04), sample(2, Zrpc, 2200, 0.04), sample(2, GRPC, 2400, 0.04),
	}
	var b strings.Builder
	if err := WriteTable(&b, samples); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "| 16 | zrpc-base | 1500 (1000–2000) |") {
		t.Errorf("no zrpc-base row in\n%s", b.String())
	}
	if !strings.Contains(b.String(), "| 16 | 1.100 (1.100–1.100) | 0.909 (0.909–0.909) |") {
		t.Errorf("no zrpc ÷ zrpc-base row of 1.100 calls/s and 0.909 CPU/call in\n%s", b.String())
	}
}

func TestConfigValidateNamesEveryBadField(t *testing.T) {
	err := Config{Reps: 0, Callers: []int{0}, Duration: 0, Warmup: -1, Payload: -1}.Validate()
	if err == nil {
		t.Fatal("bad config validated")
	}
	for _, name := range []string{"zrpcd", "zrpcecho", "zrpcrpcbench", "reps", "callers", "duration", "warmup", "payload"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
	err = Config{Systems: []string{"grpc", ZrpcBase}, Base: Binaries{Zrpcd: "/nonexistent/zrpcd"}}.Validate()
	for _, want := range []string{`unknown system "grpc"`, "base zrpcecho"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	err = Config{ZrpcClient: "no-stages"}.Validate()
	if err == nil || !strings.Contains(err.Error(), `zrpc client "no-stages"`) {
		t.Errorf("unknown zrpc client variant: error %v, want one naming it", err)
	}
	err = Config{Systems: []string{ZrpcBase}}.Validate()
	if err == nil || !strings.Contains(err.Error(), "--base") {
		t.Errorf("zrpc-base without a base build: error %v, want one saying --base", err)
	}
}

// TestRunEndToEnd builds the binaries and runs one short repetition of
// every system; it needs ZRPC_BENCH=1 (it builds zrpcd and runs processes).
func TestRunEndToEnd(t *testing.T) {
	if os.Getenv("ZRPC_BENCH") != "1" {
		t.Skip("set ZRPC_BENCH=1 to run the out-of-process benchmark")
	}
	bin := t.TempDir()
	for _, b := range []struct{ dir, name, pkg string }{
		{"../..", "zrpcd", "./cmd/zrpcd"}, {"..", "zrpcecho", "./cmd/zrpcecho"}, {"..", "zrpcrpcbench", "./cmd/zrpcrpcbench"},
	} {
		if err := proc.GoBuild(b.dir, filepath.Join(bin, b.name), b.pkg); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	cfg := Config{
		Bins:    Binaries{Zrpcd: filepath.Join(bin, "zrpcd"), Echo: filepath.Join(bin, "zrpcecho"), Self: filepath.Join(bin, "zrpcrpcbench")},
		Reps:    1,
		Callers: []int{2},
		Warmup:  100 * time.Millisecond, Duration: 300 * time.Millisecond,
		Payload: 100,
		Dir:     dir,
		Log:     slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	samples, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != len(Systems) {
		t.Fatalf("%d samples, want one per system", len(samples))
	}
	for _, s := range samples {
		if s.Calls == 0 || s.ServerCPUSeconds+s.CPUSeconds <= 0 || s.Allocs == 0 {
			t.Errorf("%s measured %+v, want calls, CPU time and allocations", s.System, s)
		}
	}
	for _, d := range []string{dir, bin} {
		if pids, err := proc.ProcessesUnder(d); err != nil || len(pids) > 0 {
			t.Errorf("processes under %s still running after Run: %v (%v)", d, pids, err)
		}
	}
}

func TestZrpcClientVariantsAreKnownByName(t *testing.T) {
	for _, v := range append([]string{""}, ZrpcClients...) {
		if _, err := zrpcClientOptions(v); err != nil {
			t.Errorf("variant %q: %v", v, err)
		}
	}
	if _, err := zrpcClientOptions("no-stages"); err == nil || !strings.Contains(err.Error(), "no-timeout") {
		t.Errorf("unknown variant: error %v, want one listing the variants", err)
	}
}
