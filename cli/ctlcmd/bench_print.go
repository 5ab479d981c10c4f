package ctlcmd

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/zrpcio/zrpc/loadgen"
)

// benchHistogramRows is the number of rows of the latency histogram.
const benchHistogramRows = 12

// benchBarWidth is the width of the histogram's longest bar.
const benchBarWidth = 40

// benchReport is what zrpcctl bench prints: -o json writes it as is.
type benchReport struct {
	Target         string           `json:"target"`
	Method         string           `json:"method"`
	Concurrency    int              `json:"concurrency"`
	Connections    int              `json:"connections"`
	RateLimit      float64          `json:"rate_limit,omitempty"`
	Chain          bool             `json:"chain"`
	Idempotent     bool             `json:"idempotent,omitempty"`
	ElapsedSeconds float64          `json:"elapsed_seconds"`
	Requests       int64            `json:"requests"`
	Errors         int64            `json:"errors"`
	QPS            float64          `json:"qps"`
	WindowSeconds  float64          `json:"window_seconds"`
	AfterWindow    int64            `json:"after_window"`
	Codes          map[string]int64 `json:"codes"`
	LatencyMS      benchLatency     `json:"latency_ms"`
	Histogram      []benchBin       `json:"histogram"`
	Interrupted    bool             `json:"interrupted"`
}

// benchLatency are the latency statistics in milliseconds.
type benchLatency struct {
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

// benchBin is one histogram row: calls slower than the previous row's
// bound and at most UpToMS.
type benchBin struct {
	UpToMS float64 `json:"up_to_ms"`
	Count  uint64  `json:"count"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func newBenchReport(target string, b *benchOptions, res *loadgen.Result) *benchReport {
	h := res.Latency
	r := &benchReport{
		Target: target, Method: strings.TrimPrefix(res.Method, "/"),
		Concurrency: b.concurrency, Connections: b.connections, RateLimit: b.rate, Chain: b.chain || b.idempotent, Idempotent: b.idempotent,
		ElapsedSeconds: res.Elapsed.Seconds(), Requests: res.Requests, Errors: res.Errors(), QPS: res.QPS(),
		WindowSeconds: res.Window.Seconds(), AfterWindow: res.AfterWindow,
		Codes: map[string]int64{},
		LatencyMS: benchLatency{
			Min: ms(h.Min()), Mean: ms(h.Mean()), P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)),
			P99: ms(h.Quantile(0.99)), P999: ms(h.Quantile(0.999)), Max: ms(h.Max()),
		},
		Histogram:   []benchBin{},
		Interrupted: res.Interrupted,
	}
	for code, n := range res.Codes {
		r.Codes[code.String()] = n
	}
	for _, bin := range h.Bins(benchHistogramRows) {
		r.Histogram = append(r.Histogram, benchBin{UpToMS: ms(bin.UpTo), Count: bin.Count})
	}
	return r
}

// printBench writes r as text for people, or as one JSON object.
func printBench(p *printer, r *benchReport) error {
	if p.json {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return fmt.Errorf("encode result as json: %w", err)
		}
		_, err = p.w.Write(append(b, '\n'))
		return err
	}
	tw := tabwriter.NewWriter(p.w, 0, 0, 2, ' ', 0)
	conns := "connection"
	if r.Connections != 1 {
		conns += "s"
	}
	fmt.Fprintf(tw, "Target:\t%s\n", escapeControl(r.Target))
	fmt.Fprintf(tw, "Method:\t%s\n", escapeControl(r.Method))
	fmt.Fprintf(tw, "Callers:\t%d over %d %s\n", r.Concurrency, r.Connections, conns)
	if r.RateLimit > 0 {
		fmt.Fprintf(tw, "Rate limit:\t%g calls/s\n", r.RateLimit)
	}
	switch {
	case r.Idempotent:
		fmt.Fprintf(tw, "Client chain:\tyes, the method idempotent (timeout per attempt, retries, breaker): errors are those it let through\n")
	case r.Chain:
		fmt.Fprintf(tw, "Client chain:\tyes (timeout per attempt, retries of calls that reached no server, breaker): errors are those it let through\n")
	}
	fmt.Fprintf(tw, "Elapsed:\t%.3fs\n", r.ElapsedSeconds)
	fmt.Fprintf(tw, "Requests:\t%d\n", r.Requests)
	fmt.Fprintf(tw, "Errors:\t%d\n", r.Errors)
	fmt.Fprintf(tw, "QPS:\t%.1f (calls finished within the %.3fs window, per second of it)\n", r.QPS, r.WindowSeconds)
	if r.AfterWindow > 0 {
		fmt.Fprintf(tw, "After the window:\t%d calls, in flight when --duration ended: in the codes and latencies, not in QPS\n", r.AfterWindow)
	}
	if r.Interrupted {
		fmt.Fprintf(tw, "Interrupted:\tyes, these are the calls finished before it\n")
	}
	fmt.Fprintln(tw)
	l := r.LatencyMS
	fmt.Fprintln(tw, "Latency (ms):")
	for _, s := range []struct {
		name string
		v    float64
	}{{"min", l.Min}, {"mean", l.Mean}, {"p50", l.P50}, {"p90", l.P90}, {"p99", l.P99}, {"p99.9", l.P999}, {"max", l.Max}} {
		fmt.Fprintf(tw, "  %s\t%.3f\n", s.name, s.v)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "Status codes:")
	for _, c := range sortedCodes(r.Codes) {
		fmt.Fprintf(tw, "  %s\t%d\n", c, r.Codes[c])
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return printBenchHistogram(p.w, r.Histogram)
}

// sortedCodes lists the codes by their number (OK first).
func sortedCodes(m map[string]int64) []string {
	byName := map[string]codes.Code{}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		byName[c.String()] = c
	}
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return int(byName[a]) - int(byName[b]) })
	return names
}

// printBenchHistogram draws one bar per row, the longest benchBarWidth
// wide.
func printBenchHistogram(w io.Writer, bins []benchBin) error {
	if len(bins) == 0 {
		return nil
	}
	var most uint64
	for _, b := range bins {
		most = max(most, b.Count)
	}
	var sb strings.Builder
	sb.WriteString("\nLatency histogram (ms, calls up to each bound):\n")
	for _, b := range bins {
		bar := int(b.Count * benchBarWidth / most)
		if bar == 0 && b.Count > 0 {
			bar = 1
		}
		fmt.Fprintf(&sb, "  %10.3f  [%d]\t|%s\n", b.UpToMS, b.Count, strings.Repeat("■", bar))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	if _, err := io.WriteString(tw, sb.String()); err != nil {
		return err
	}
	return tw.Flush()
}

// benchProgress draws a load's progress on stderr: in place on a
// terminal, one line per report when forced to write elsewhere, not at
// all otherwise.
type benchProgress struct {
	w        io.Writer // nil: no progress
	terminal bool

	mu    sync.Mutex
	drawn bool
}

func newBenchProgress(w io.Writer, force bool) *benchProgress {
	term := isTerminal(w)
	if !term && !force {
		w = nil
	}
	return &benchProgress{w: w, terminal: term}
}

// report draws one report; loadgen calls it once a second.
func (p *benchProgress) report(pr loadgen.Progress) {
	if p.w == nil {
		return
	}
	line := fmt.Sprintf("%6.1fs  %d calls  %d errors  %.0f calls/s", pr.Elapsed.Seconds(), pr.Requests, pr.Errors, pr.QPS)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.terminal {
		fmt.Fprintf(p.w, "\r\x1b[K%s", line)
		p.drawn = true
		return
	}
	fmt.Fprintln(p.w, line)
}

// done ends the progress line before the result is printed.
func (p *benchProgress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
}
