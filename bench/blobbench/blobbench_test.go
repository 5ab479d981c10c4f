package blobbench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/bench/internal/proc"
)

func TestRoundsRunEverySystemOncePerRepetitionRotatingTheOrder(t *testing.T) {
	cfg := Config{Agents: []int{3, 5}, BlockSizes: []int{1 << 20, 4 << 20}}
	systems := cfg.systems()
	if len(systems) != 2+2*2 {
		t.Fatalf("systems %v, want the two baselines and zrpc at 2 sizes × 2 block sizes", systems)
	}
	got := rounds(3, systems)
	if len(got) != 3*len(systems) {
		t.Fatalf("%d rounds, want %d", len(got), 3*len(systems))
	}
	seen := map[Round]bool{}
	first := map[int]System{}
	for _, r := range got {
		if seen[r] {
			t.Errorf("round %+v twice", r)
		}
		seen[r] = true
		if _, ok := first[r.Rep]; !ok {
			first[r.Rep] = r.System
		}
	}
	for _, rep := range []int{1, 2, 3} {
		for _, s := range systems {
			if !seen[Round{Rep: rep, System: s}] {
				t.Errorf("repetition %d does not run %s", rep, s)
			}
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

// sample is an operation on 1 GB that took seconds, with cpu seconds on
// the server side.
func sample(rep int, sys System, op string, seconds, cpu float64) Sample {
	return Sample{Round: Round{Rep: rep, System: sys}, Op: op, Bytes: 1e9, Seconds: seconds, ServerCPUSeconds: cpu, ClientCPUSeconds: 1}
}

// row returns the cells of the table's row starting with prefix.
func row(t *testing.T, table, prefix string) []string {
	t.Helper()
	for line := range strings.SplitSeq(table, "\n") {
		if strings.HasPrefix(line, prefix) {
			cells := strings.Split(line, "|")
			for i := range cells {
				cells[i] = strings.TrimSpace(cells[i])
			}
			return cells[1 : len(cells)-1]
		}
	}
	t.Fatalf("no row %q in\n%s", prefix, table)
	return nil
}

func TestTableShowsRatiosToThePlainStreamWithinEachRepetition(t *testing.T) {
	stream, cp := System{Name: Stream}, System{Name: Copy}
	z3 := System{Name: Zrpc, Agents: 3, BlockSize: 1 << 20}
	// The machine doubles its speed between the repetitions; zrpc's put
	// runs at 0.5 of the stream's and its degraded get at 0.8 of the
	// stream's get in both, which a ratio of medians would not show.
	samples := []Sample{
		sample(1, stream, OpPut, 4, 2), sample(1, stream, OpGet, 2, 1), sample(1, cp, OpPut, 2, 0),
		sample(1, z3, OpPut, 8, 10), sample(1, z3, OpGet, 2, 4), sample(1, z3, OpDegradedGet, 2.5, 6),
		sample(2, stream, OpPut, 2, 2), sample(2, stream, OpGet, 1, 1), sample(2, cp, OpPut, 1, 0),
		sample(2, z3, OpPut, 4, 12), sample(2, z3, OpGet, 1, 4), sample(2, z3, OpDegradedGet, 1.25, 6),
	}
	var b strings.Builder
	if err := WriteTable(&b, samples); err != nil {
		t.Fatal(err)
	}
	table := b.String()
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"| put | zrpc, 3 agents, 1 MiB blocks |", []string{"188 (125–250)", "0.50 (0.50–0.50)", "0.25 (0.25–0.25)", "11.00 (10.00–12.00)", "1.00 (1.00–1.00)"}},
		{"| degraded-get | zrpc, 3 agents, 1 MiB blocks |", []string{"600 (400–800)", "0.80 (0.80–0.80)", "–", "6.00 (6.00–6.00)"}},
		{"| put | grpc-stream |", []string{"375 (250–500)", "–", "0.50 (0.50–0.50)"}},
		{"| put | cp+fsync |", []string{"750 (500–1000)", "2.00 (2.00–2.00)", "–", "–"}},
	} {
		cells := row(t, table, c.prefix)
		for i, w := range c.want {
			if got := cells[2+i]; got != w {
				t.Errorf("%s column %d = %q, want %q\n%s", c.prefix, 2+i, got, w, table)
			}
		}
	}
	// Baselines come first, then zrpc; puts before gets.
	if strings.Index(table, "| put | grpc-stream") > strings.Index(table, "| put | zrpc") ||
		strings.Index(table, "| put | zrpc") > strings.Index(table, "| get | grpc-stream") {
		t.Errorf("rows out of order:\n%s", table)
	}
}

func TestConfigValidateNamesEveryBadField(t *testing.T) {
	err := Config{Reps: 0, Size: 0, Agents: []int{1}, BlockSizes: []int{-1}}.Validate()
	if err == nil {
		t.Fatal("bad config validated")
	}
	for _, name := range []string{"zrpcd", "zrpcctl", "zrpcblobbench", "reps", "size", "agents", "block size"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
	if err := (Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "agents") || !strings.Contains(err.Error(), "block sizes") {
		t.Errorf("empty agents and block sizes: %v, want both named", err)
	}
}

func TestParseSizeReadsUnitsAndRejectsGarbage(t *testing.T) {
	for in, want := range map[string]int64{"256MiB": 256 << 20, "4M": 4 << 20, "1 GiB": 1 << 30, "4096": 4096, "0": 0, "1 MiB": 1 << 20} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1.5MiB", "12 parsecs", "99999999999GiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
	for _, n := range []int64{1 << 20, 4 << 20, 4096, 1000} {
		if got, err := ParseSize(FormatSize(n)); err != nil || got != n {
			t.Errorf("ParseSize(FormatSize(%d) = %q) = %d, %v", n, FormatSize(n), got, err)
		}
	}
}

func peer(id, suffrage string, leader bool) *zrpcpb.Peer {
	return &zrpcpb.Peer{Id: id, Suffrage: suffrage, Leader: leader}
}

func TestVictimsSpareTheClientsAgentAndTheLeaderAndKillNonvotersFirst(t *testing.T) {
	names := []string{"z1", "z2", "z3", "z4", "z5"}
	peers := []*zrpcpb.Peer{peer("z1", "voter", false), peer("z2", "voter", true), peer("z3", "voter", false),
		peer("z4", "nonvoter", false), peer("z5", "nonvoter", false)}
	got, err := chooseVictims(names, "z1", peers, 2)
	if err != nil || !slices.Equal(got, []string{"z4", "z5"}) {
		t.Errorf("chooseVictims(5 agents, m=2) = %v, %v; want the two nonvoters", got, err)
	}
	got, err = chooseVictims(names, "z1", peers, 3)
	if err != nil || !slices.Equal(got, []string{"z4", "z5", "z3"}) {
		t.Errorf("chooseVictims(5 agents, m=3) = %v, %v; want the nonvoters, then a voter", got, err)
	}
	if _, err := chooseVictims(names, "z1", peers, 4); err == nil {
		t.Error("chose 4 victims among 3 candidates")
	}
	three := []*zrpcpb.Peer{peer("z1", "voter", true), peer("z2", "voter", false), peer("z3", "voter", false)}
	got, err = chooseVictims(names[:3], "z1", three, 1)
	if err != nil || !slices.Equal(got, []string{"z2"}) {
		t.Errorf("chooseVictims(3 agents, m=1) = %v, %v; want z2", got, err)
	}
}

func TestVerifyFailsOnOneWrongByte(t *testing.T) {
	dir := t.TempDir()
	src, err := writeSource(filepath.Join(dir, "data"), 100_000)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.verify(src.path); err != nil {
		t.Fatalf("the data itself: %v", err)
	}
	b, err := os.ReadFile(src.path)
	if err != nil {
		t.Fatal(err)
	}
	b[77_777] ^= 1
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := src.verify(bad); !errors.Is(err, ErrWrongBytes) {
		t.Errorf("one flipped byte: %v, want ErrWrongBytes", err)
	}
	if err := os.WriteFile(bad, b[:len(b)-1], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := src.verify(bad); !errors.Is(err, ErrWrongBytes) {
		t.Errorf("one byte short: %v, want ErrWrongBytes", err)
	}
}

// startStream serves the plain stream in this process for the test's
// duration and returns its address and directory.
func startStream(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, "127.0.0.1:0", dir, pw); pw.Close() }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	line, err := readLine(pr)
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	return strings.TrimPrefix(line, Listening), dir
}

func readLine(r io.Reader) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for {
		if _, err := r.Read(one); err != nil {
			return "", err
		}
		if one[0] == '\n' {
			return string(b), nil
		}
		b = append(b, one[0])
	}
}

func TestPlainStreamStoresAndReturnsTheSameBytes(t *testing.T) {
	addr, sdir := startStream(t)
	dir := t.TempDir()
	// Not a multiple of either chunk size, so the last messages are short.
	src, err := writeSource(filepath.Join(dir, "data"), 3*PutChunk+12_345)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := StreamPut(ctx, addr, src.path, "blob"); err != nil {
		t.Fatal(err)
	}
	if err := src.verify(filepath.Join(sdir, "blob")); err != nil {
		t.Errorf("the server's file: %v", err)
	}
	dst := filepath.Join(dir, "got")
	if err := StreamGet(ctx, addr, "blob", dst); err != nil {
		t.Fatal(err)
	}
	if err := src.verify(dst); err != nil {
		t.Errorf("the file read back: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("client dir holds %d entries, want data and got only (no temporary file left)", len(entries))
	}
}

func TestPlainStreamRefusesPathsOutsideItsDirectory(t *testing.T) {
	addr, _ := startStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dst := filepath.Join(t.TempDir(), "got")
	for _, name := range []string{"../escape", "", ".hidden", "a/b"} {
		if err := StreamGet(ctx, addr, name, dst); err == nil || !strings.Contains(err.Error(), "plain file") {
			t.Errorf("get %q: %v, want an error asking for a plain file name", name, err)
		}
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Errorf("a refused get left %s (%v)", dst, err)
	}
}

func TestJSONLinesCarryTheRoundAndTheMeasures(t *testing.T) {
	var b bytes.Buffer
	s := Sample{Round: Round{Rep: 2, System: System{Name: Zrpc, Agents: 5, BlockSize: 4 << 20}}, Op: OpDegradedGet,
		Bytes: 1 << 20, Seconds: 0.5, ServerCPUSeconds: 0.25, Killed: []string{"z4", "z5"}, LoadAverage: 1.5}
	if err := WriteJSON(&b, s); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("%q: %v", b.String(), err)
	}
	for k, want := range map[string]any{"rep": 2.0, "system": Zrpc, "agents": 5.0, "block_size": float64(4 << 20),
		"op": OpDegradedGet, "bytes": float64(1 << 20), "seconds": 0.5, "server_cpu_seconds": 0.25, "load_average": 1.5} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v (line %s)", k, got[k], want, b.String())
		}
	}
	if !strings.HasSuffix(b.String(), "}\n") || strings.Count(b.String(), "\n") != 1 {
		t.Errorf("want one line, got %q", b.String())
	}
}

// TestRunEndToEnd builds the binaries and runs one small repetition of
// every system on 3 agents; it needs ZRPC_BENCH=1 (it builds zrpcd and
// zrpcctl and runs processes).
func TestRunEndToEnd(t *testing.T) {
	if os.Getenv("ZRPC_BENCH") != "1" {
		t.Skip("set ZRPC_BENCH=1 to run the out-of-process benchmark")
	}
	bin := t.TempDir()
	for _, b := range []struct{ dir, name, pkg string }{
		{"../..", "zrpcd", "./cmd/zrpcd"}, {"../..", "zrpcctl", "./cmd/zrpcctl"}, {"..", "zrpcblobbench", "./cmd/zrpcblobbench"},
	} {
		if err := proc.GoBuild(b.dir, filepath.Join(bin, b.name), b.pkg); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	cfg := Config{
		Bins: Binaries{Zrpcd: filepath.Join(bin, "zrpcd"), Zrpcctl: filepath.Join(bin, "zrpcctl"), Self: filepath.Join(bin, "zrpcblobbench")},
		Reps: 1,
		// Large enough that every server spends more than the 10 ms
		// resolution of /proc's CPU times; not a multiple of a block.
		Size:       32<<20 + 17,
		Agents:     []int{3},
		BlockSizes: []int{1 << 20},
		Dir:        dir,
		Log:        slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var emitted int
	samples, err := Run(ctx, cfg, func(Sample) error { emitted++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]int{}
	for _, s := range samples {
		ops[s.System.Name+" "+s.Op]++
		if s.Bytes != cfg.Size || s.Seconds <= 0 {
			t.Errorf("%s %s measured %+v, want the size and a time", s.System, s.Op, s)
		}
		if s.Name != Copy && s.ServerCPUSeconds <= 0 {
			t.Errorf("%s %s: no server CPU time measured", s.System, s.Op)
		}
		if s.Op == OpDegradedGet && len(s.Killed) != 1 {
			t.Errorf("degraded get killed %v, want the one agent of a 2+1 blob", s.Killed)
		}
	}
	want := map[string]int{Stream + " put": 1, Stream + " get": 1, Copy + " put": 1, Zrpc + " put": 1, Zrpc + " get": 1, Zrpc + " degraded-get": 1}
	if len(ops) != len(want) || emitted != len(samples) {
		t.Errorf("measured %v (%d emitted), want %v", ops, emitted, want)
	}
	for k, n := range want {
		if ops[k] != n {
			t.Errorf("%s measured %d times, want %d", k, ops[k], n)
		}
	}
	for _, d := range []string{dir, bin} {
		if pids, err := proc.ProcessesUnder(d); err != nil || len(pids) > 0 {
			t.Errorf("processes under %s still running after Run: %v (%v)", d, pids, err)
		}
	}
}
