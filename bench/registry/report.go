package registry

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Result is what one round measured: one system, one repetition, one case
// of a scenario. It is written as one JSON line.
type Result struct {
	Time     time.Time          `json:"time"`
	Scenario string             `json:"scenario"`
	Topology string             `json:"topology"`
	Case     string             `json:"case"`
	System   string             `json:"system"`
	Rep      int                `json:"rep"`
	Load1    float64            `json:"load1"`
	Metrics  map[string]float64 `json:"metrics"`
	// Order is the metrics' names in the order the table shows them.
	Order []string `json:"-"`
}

// metric appends a named value to r.
func (r *Result) metric(name string, v float64) {
	if r.Metrics == nil {
		r.Metrics = map[string]float64{}
	}
	if _, ok := r.Metrics[name]; !ok {
		r.Order = append(r.Order, name)
	}
	r.Metrics[name] = v
}

// Report collects results in the order they were measured and writes each
// as a JSON line as it comes.
type Report struct {
	mu      sync.Mutex
	Systems []string
	Results []Result
	jsonl   io.Writer
	// LoadStart and LoadEnd are the machine's one-minute load average at
	// the start and the end of the run.
	LoadStart, LoadEnd float64
}

// NewReport returns a report comparing systems (the first is the one
// whose ratio to the second the table shows), writing JSON lines to jsonl
// when it is not nil.
func NewReport(systems []string, jsonl io.Writer) *Report {
	return &Report{Systems: systems, jsonl: jsonl}
}

func (r *Report) add(res Result) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Results = append(r.Results, res)
	if r.jsonl == nil {
		return nil
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = r.jsonl.Write(append(b, '\n'))
	return err
}

// row is one line of the table: one metric of one case.
type row struct{ scenario, topology, caseName, metric string }

// rows returns the table's rows in the order they were first measured.
func (r *Report) rows() []row {
	seen := map[row]bool{}
	var out []row
	for _, res := range r.Results {
		for _, m := range res.Order {
			k := row{res.Scenario, res.Topology, res.Case, m}
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	return out
}

// each calls fn with the repetition and the metric's value of every
// result of system in k's case, in the order they were measured.
func (r *Report) each(k row, system string, fn func(rep int, x float64)) {
	for _, res := range r.Results {
		if res.System != system || res.Scenario != k.scenario || res.Topology != k.topology || res.Case != k.caseName {
			continue
		}
		if x, ok := res.Metrics[k.metric]; ok {
			fn(res.Rep, x)
		}
	}
}

// values returns the metric's value in every repetition of system.
func (r *Report) values(k row, system string) []float64 {
	var v []float64
	r.each(k, system, func(_ int, x float64) { v = append(v, x) })
	return v
}

// repRatios returns, for every repetition that measured the metric on
// both of the first two systems, the first's value over the second's: the
// systems ran one after the other in it, on the same machine state, so
// these ratios show how far the comparison moves from one repetition to
// the next.
func (r *Report) repRatios(k row) []float64 {
	second := map[int]float64{}
	r.each(k, r.Systems[1], func(rep int, x float64) { second[rep] = x })
	var out []float64
	r.each(k, r.Systems[0], func(rep int, x float64) {
		if d, ok := second[rep]; ok {
			if q, ok := ratio(x, d); ok {
				out = append(out, q)
			}
		}
	})
	return out
}

// WriteMarkdown writes a markdown table: per metric, each system's median
// over repetitions with its min-max, and the ratio of the first system's
// median to the second's, with the min-max of the ratios within each
// repetition.
func (r *Report) WriteMarkdown(w io.Writer) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	b.WriteString("| scenario | topology | case | metric |")
	for _, s := range r.Systems {
		fmt.Fprintf(&b, " %s median (min-max) |", s)
	}
	sep := "|---|---|---|---|" + strings.Repeat("---|", len(r.Systems))
	if len(r.Systems) == 2 {
		fmt.Fprintf(&b, " %s/%s: ratio of medians (each repetition's, min-max) |", r.Systems[0], r.Systems[1])
		sep += "---|"
	}
	b.WriteString("\n" + sep + "\n")
	for _, k := range r.rows() {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |", k.scenario, k.topology, k.caseName, k.metric)
		var meds []summary
		for _, s := range r.Systems {
			sum := summarize(r.values(k, s))
			meds = append(meds, sum)
			fmt.Fprintf(&b, " %s |", cell(k.metric, sum))
		}
		if len(r.Systems) == 2 {
			q, ok := ratio(meds[0].Median, meds[1].Median)
			if ok && meds[0].N > 0 {
				fmt.Fprintf(&b, " %.2fx", q)
				if reps := summarize(r.repRatios(k)); reps.N > 1 {
					fmt.Fprintf(&b, " (%.2f-%.2f)", reps.Min, reps.Max)
				}
				b.WriteString(" |")
			} else {
				b.WriteString(" - |")
			}
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// cell formats a summary: "-" when nothing was measured, the value alone
// for one repetition, else "median (min-max)"; latencies and seconds with
// two decimals, everything else as whole numbers.
func cell(metric string, s summary) string {
	if s.N == 0 {
		return "-"
	}
	f := "%.0f"
	if strings.HasSuffix(metric, " ms") || strings.HasSuffix(metric, " s") || strings.HasSuffix(metric, " %") {
		f = "%.2f"
	}
	if s.N == 1 {
		return fmt.Sprintf(f, s.Median)
	}
	return fmt.Sprintf(f+" ("+f+"-"+f+")", s.Median, s.Min, s.Max)
}
