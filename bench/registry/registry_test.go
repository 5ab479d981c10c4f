package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSummarizeGivesMedianMinAndMax(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want summary
	}{
		{"none", nil, summary{}},
		{"one", []float64{7}, summary{Median: 7, Min: 7, Max: 7, N: 1}},
		{"odd count, unsorted", []float64{30, 10, 20}, summary{Median: 20, Min: 10, Max: 30, N: 3}},
		{"even count: mean of the middle two", []float64{4, 1, 3, 2}, summary{Median: 2.5, Min: 1, Max: 4, N: 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.in)
			if got := summarize(tc.in); got != tc.want {
				t.Errorf("summarize(%v) = %+v, want %+v", tc.in, got, tc.want)
			}
			if !slices.Equal(in, tc.in) {
				t.Errorf("summarize reordered its input: %v", tc.in)
			}
		})
	}
}

func TestRatioIsUndefinedForAZeroBase(t *testing.T) {
	if q, ok := ratio(3, 2); !ok || q != 1.5 {
		t.Errorf("ratio(3, 2) = %v, %v; want 1.5, true", q, ok)
	}
	if _, ok := ratio(3, 0); ok {
		t.Error("ratio(3, 0) gave a ratio")
	}
}

func TestQuantileUsesNearestRank(t *testing.T) {
	upTo := func(n int) []time.Duration { // 1, 2, ..., n ms
		var d []time.Duration
		for i := 1; i <= n; i++ {
			d = append(d, time.Duration(i)*time.Millisecond)
		}
		return d
	}
	for _, tc := range []struct {
		sorted []time.Duration
		q      float64
		want   float64
	}{
		{nil, 0.99, 0},
		{upTo(1), 0.5, 1},
		{upTo(2), 0.5, 1},
		{upTo(3), 0.5, 2},
		{upTo(4), 0.5, 2},
		{upTo(4), 0.99, 4},
		{upTo(10), 0.9, 9},
		{upTo(100), 0.5, 50},
		{upTo(100), 0.99, 99},
		{upTo(200), 0.99, 198},
		{upTo(1000), 0.999, 999},
	} {
		if got := quantileMS(tc.sorted, tc.q); got != tc.want {
			t.Errorf("quantile %g of 1..%d ms = %v ms, want %v", tc.q, len(tc.sorted), got, tc.want)
		}
	}
}

func TestInterleaveAlternatesSystemsWithinEachRepetition(t *testing.T) {
	got := interleave(3, []string{Zrpc, Etcd})
	want := []slot{{1, Zrpc}, {1, Etcd}, {2, Zrpc}, {2, Etcd}, {3, Zrpc}, {3, Etcd}}
	if !slices.Equal(got, want) {
		t.Errorf("interleave = %v, want %v", got, want)
	}
}

func TestStampSurvivesTheValue(t *testing.T) {
	v := instanceValue("i00000042", 1764700000123456789)
	if len(v) < 200 {
		t.Errorf("value is %d bytes, want at least 200", len(v))
	}
	if s, ok := stampOf([]byte(v)); !ok || s != 1764700000123456789 {
		t.Errorf("stampOf = %d, %v", s, ok)
	}
	if _, ok := stampOf([]byte("probe")); ok {
		t.Error("a value without a stamp gave one")
	}
}

// results of two repetitions of one case, zrpc faster with lower latency.
func sampleReport(jsonl io.Writer) *Report {
	rep := NewReport([]string{Zrpc, Etcd}, jsonl)
	add := func(system string, r int, rate, p99 float64) {
		res := Result{Scenario: "puts", Topology: "1 node", Case: "16 writers", System: system, Rep: r}
		res.metric("writes/s", rate)
		res.metric("p99 ms", p99)
		res.Metrics["failed"] = 0
		if err := rep.add(res); err != nil {
			panic(err)
		}
	}
	add(Zrpc, 1, 6000, 4)
	add(Etcd, 1, 4000, 6)
	add(Zrpc, 2, 7000, 5)
	add(Etcd, 2, 5000, 8)
	add(Zrpc, 3, 6500, 4.5)
	add(Etcd, 3, 4500, 7)
	return rep
}

func TestMarkdownTableShowsMediansRangesAndRatios(t *testing.T) {
	rep := sampleReport(nil)
	var b strings.Builder
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	want := []string{
		"| scenario | topology | case | metric | zrpc median (min-max) | etcd median (min-max) | zrpc/etcd: ratio of medians (each repetition's, min-max) |",
		"|---|---|---|---|---|---|---|",
		"| puts | 1 node | 16 writers | writes/s | 6500 (6000-7000) | 4500 (4000-5000) | 1.44x (1.40-1.50) |",
		"| puts | 1 node | 16 writers | p99 ms | 4.50 (4.00-5.00) | 7.00 (6.00-8.00) | 0.64x (0.62-0.67) |",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), strings.Join(want, "\n"))
	}
}

func TestMarkdownTableMarksWhatOneSystemDidNotMeasure(t *testing.T) {
	rep := NewReport([]string{Zrpc, Etcd}, nil)
	res := Result{Scenario: "scale", Topology: "1 node", Case: "100000 instances", System: Zrpc, Rep: 1}
	res.metric("RSS MiB", 250)
	if err := rep.add(res); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	if want := "| scale | 1 node | 100000 instances | RSS MiB | 250 | - | - |"; !strings.Contains(b.String(), want) {
		t.Errorf("table lacks %q:\n%s", want, b.String())
	}
}

func TestEveryResultIsOneJSONLine(t *testing.T) {
	var buf bytes.Buffer
	sampleReport(&buf)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 6 {
		t.Fatalf("%d lines, want 6:\n%s", len(lines), buf.String())
	}
	var first Result
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first.System != Zrpc || first.Rep != 1 || first.Metrics["writes/s"] != 6000 || first.Scenario != "puts" {
		t.Errorf("first line decodes to %+v", first)
	}
	if _, ok := first.Metrics["failed"]; !ok {
		t.Error("a metric kept out of the table is missing from the JSON line")
	}
}

func TestConfigValidateNamesEveryBadField(t *testing.T) {
	c := Config{Systems: []string{Zrpc, "consul"}, Phases: []string{"puts", "soak"}, Nodes: []int{2}, Writers: []int{0}}
	err := c.Validate()
	if err == nil {
		t.Fatal("a bad config validated")
	}
	for _, want := range []string{"binary of zrpc: no path given", `unknown system "consul"`, `unknown phase "soak"`,
		"nodes 2", "reps 0", "scale reps 0", "max ops 0", "rate 0", "watch events 0", "fanout services 0",
		"fanout watchers 0", "fanout conns 0", "fanout writes 0", "failover kills 0", "instances 0", "duration 0s", "writers 0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func TestDefaultAndQuickConfigsAreValidButForTheBinaries(t *testing.T) {
	for name, c := range map[string]Config{"default": Default(), "quick": Quick()} {
		err := c.Validate()
		if err == nil {
			t.Fatalf("%s: validated without binaries", name)
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !strings.HasPrefix(line, "binary of ") {
				t.Errorf("%s: %s", name, line)
			}
		}
	}
}

// A paced call that has not returned does not hold the next one back:
// each of these calls returns only once all of them have started.
func TestPacedStartsCallsWithoutWaitingForEarlierOnes(t *testing.T) {
	const n = 5
	var started sync.WaitGroup
	started.Add(n)
	all := make(chan struct{})
	go func() { started.Wait(); close(all) }()
	_, err := paced(context.Background(), n, 1000, func(int) error {
		started.Done()
		select {
		case <-all:
			return nil
		case <-time.After(10 * time.Second):
			return errors.New("the other calls did not start while this one ran")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPacedRateLeavesOutTheWaitForTheLastCall: the rate achieved is the
// calls started per second, however long the last of them takes to
// return.
func TestPacedRateLeavesOutTheWaitForTheLastCall(t *testing.T) {
	const n, hang = 5, 2 * time.Second
	rate, err := paced(t.Context(), n, 1000, func(i int) error {
		if i == n-1 {
			time.Sleep(hang) // the last write, stuck until its timeout
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Counting the hang, the rate would be below n/hang.
	if rate <= 10*n/hang.Seconds() {
		t.Fatalf("rate achieved %.1f/s for %d calls paced at 1000/s: the wait for the last call's return was counted", rate, n)
	}
}

// TestClosedLoopRateLeavesOutTheCallsInFlightAtTheEnd: a write still in
// flight when the round's duration is over, here one that hangs, is timed
// but neither its wait nor the write count in the rate.
func TestClosedLoopRateLeavesOutTheCallsInFlightAtTheEnd(t *testing.T) {
	const duration, hang = 300 * time.Millisecond, 2 * time.Second
	var hung sync.Once
	load := closedLoop(t.Context(), 2, duration, math.MaxInt, func(_ context.Context, w, i int) error {
		if w == 1 && i == 3 {
			hung.Do(func() { time.Sleep(hang) })
		}
		return nil
	})
	ok := load.lat.count()
	if load.failed != 0 || ok < 10 || load.window != duration {
		t.Fatalf("%d writes, %d failed, window %s: want many, none and %s", ok, load.failed, load.window, duration)
	}
	// The two writers' calls in flight at the end are left out, no more.
	if got := load.rate() * duration.Seconds(); got < float64(ok-2)-1e-6 || got > float64(ok)+1e-6 {
		t.Fatalf("rate %.1f/s over %s is %.1f writes, want %d to %d of the %d that succeeded",
			load.rate(), duration, got, ok-2, ok, ok)
	}
}

func TestClosedLoopStopsAtMaxOps(t *testing.T) {
	var calls atomic.Int64
	load := closedLoop(t.Context(), 4, time.Minute, 10, func(context.Context, int, int) error {
		if calls.Add(1) == 1 {
			return errors.New("boom")
		}
		return nil
	})
	if n := calls.Load(); n != 10 || load.lat.count() != 9 || load.failed != 1 || load.first == nil || load.within != 9 {
		t.Fatalf("%d calls, %d succeeded (%d within the window), %d failed (%v): want 10, 9, 9, 1",
			n, load.lat.count(), load.within, load.failed, load.first)
	}
	if load.window <= 0 || load.window >= time.Minute {
		t.Fatalf("window %s, want the time the 10 calls took", load.window)
	}
}

func TestPacedReturnsTheFirstError(t *testing.T) {
	boom := errors.New("boom")
	_, err := paced(context.Background(), 3, 1000, func(i int) error {
		if i == 1 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("paced = %v, want %v", err, boom)
	}
}

// TestWritersStartOnAFollowerUnlessAskedForTheLeader: on 3 nodes the
// first writer talks to a follower, or to the leader with FirstOnLeader,
// and the writers cover every node.
func TestWritersStartOnAFollowerUnlessAskedForTheLeader(t *testing.T) {
	for _, onLeader := range []bool{false, true} {
		for leader := range 3 {
			first := firstWriterNode(leader, onLeader)
			if got := first%3 == leader; got != onLeader {
				t.Errorf("leader %d, on leader %v: the first writer talks to node %d", leader, onLeader, first%3)
			}
			seen := map[int]bool{}
			for i := range 3 {
				seen[(first+i)%3] = true
			}
			if len(seen) != 3 {
				t.Errorf("leader %d, on leader %v: 3 writers talk to nodes %v, want all", leader, onLeader, seen)
			}
		}
	}
}

// TestScrapeCounterReadsAMetric reads a counter, with or without labels,
// from a Prometheus text page, and says when the page does not have it.
func TestScrapeCounterReadsAMetric(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "# HELP go_memstats_mallocs_total Total number of mallocs.\n# TYPE go_memstats_mallocs_total counter\n"+
			"go_memstats_mallocs_total_other 3\ngo_memstats_mallocs_total 1.5e+06\n"+
			"apply_seconds_sum{result=\"error\"} 1\napply_seconds_sum{result=\"ok\"} 2.5\n")
	}))
	defer srv.Close()
	got, err := scrapeCounter(t.Context(), srv.URL, "go_memstats_mallocs_total")
	if err != nil || got != 1.5e6 {
		t.Fatalf("scrapeCounter = %v, %v; want 1.5e6", got, err)
	}
	if got, err := scrapeCounter(t.Context(), srv.URL, `apply_seconds_sum{result="ok"}`); err != nil || got != 2.5 {
		t.Fatalf("scrapeCounter of a labelled metric = %v, %v; want 2.5", got, err)
	}
	if _, err := scrapeCounter(t.Context(), srv.URL, "absent_total"); err == nil || !strings.Contains(err.Error(), "no absent_total") {
		t.Fatalf("scrapeCounter of a missing metric = %v, want an error naming it", err)
	}
}

// TestStagesSplitEachWritesTimeByWhereItArrived: the stage rows are the
// quantiles of per-write differences, matched by stamp, also when an
// event comes before the acknowledgement (negative).
func TestStagesSplitEachWritesTimeByWhereItArrived(t *testing.T) {
	acks, leader, events := newArrivals(), newArrivals(), newArrivals()
	const ms = int64(time.Millisecond)
	for i := int64(1); i <= 100; i++ {
		stamp := i * 1000 * ms
		acks.note(stamp, stamp+2*ms)
		leader.note(stamp, stamp+1*ms)
		events.note(stamp, stamp+1*ms+i*ms/100) // 0.01 .. 1 ms after the leader's
		events.note(stamp, stamp+50*ms)         // a second arrival is not the first
	}
	acks.note(1, 5*ms) // a write whose event never came is left out of "after"
	var res Result
	stageMetrics(&res, acks, leader, events)
	want := map[string]float64{
		"stage: write acknowledged p50 ms":          2,
		"stage: event on the leader p50 ms":         1,
		"stage: event after the leader's p50 ms":    0.50,
		"stage: event after the leader's p99 ms":    0.99,
		"stage: event after acknowledgement p50 ms": -0.50,
	}
	for name, v := range want {
		if got, ok := res.Metrics[name]; !ok || math.Abs(got-v) > 1e-9 {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, v)
		}
	}
	var none *arrivals
	none.note(1, 2) // a round without stages records nothing, and does not fail
}
