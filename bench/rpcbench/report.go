package rpcbench

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/zrpcio/zrpc/bench/internal/stats"
)

// Summary is the median, min and max of one measure over repetitions.
type Summary = stats.Summary

// Summarize returns the median, min and max of v.
func Summarize(v []float64) Summary { return stats.Summarize(v) }

// measure picks one number out of a sample.
type measure func(Sample) float64

// values returns m of the samples of system at callers, by repetition.
func values(samples []Sample, system string, callers int, m measure) map[int]float64 {
	out := map[int]float64{}
	for _, s := range samples {
		if s.System == system && s.Callers == callers {
			out[s.Rep] = m(s)
		}
	}
	return out
}

// ratios returns, for every repetition that measured both, m of system
// divided by m of base in that repetition.
func ratios(samples []Sample, system, base string, callers int, m measure) []float64 {
	b := values(samples, base, callers, m)
	var out []float64
	for rep, v := range values(samples, system, callers, m) {
		if d, ok := b[rep]; ok && d != 0 {
			out = append(out, v/d)
		}
	}
	return out
}

func summarize(samples []Sample, system string, callers int, m measure) Summary {
	var v []float64
	for _, x := range values(samples, system, callers, m) {
		v = append(v, x)
	}
	return Summarize(v)
}

// WriteTable writes a markdown table: for every caller count and system,
// calls per second, its ratio to grpc-go and to go-zero within each
// repetition, CPU microseconds per call (servers and load process) and
// its ratio to grpc-go, the load process's allocations per call, and the
// thread sleeps per call of all the system's processes (see
// Sample.SleepsPerCall); each as median (min–max) over the repetitions.
// When the samples include ZrpcBase, a second table gives zrpc's calls per
// second and CPU per call divided by the base build's, within each
// repetition.
func WriteTable(w io.Writer, samples []Sample) error {
	var callers []int
	for _, s := range samples {
		if !slices.Contains(callers, s.Callers) {
			callers = append(callers, s.Callers)
		}
	}
	slices.Sort(callers)
	var b strings.Builder
	b.WriteString("| callers | system | calls/s | × grpc-go | × go-zero | CPU µs/call | CPU × grpc-go | client allocs/call | thread sleeps/call |\n")
	b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range callers {
		for _, sys := range append(slices.Clip(Systems), ZrpcBase) {
			qps := summarize(samples, sys, c, Sample.CallsPerSecond)
			if qps.N == 0 {
				continue
			}
			fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", c, sys,
				qps.Format("%.0f"),
				Summarize(ratios(samples, sys, GRPC, c, Sample.CallsPerSecond)).Format("%.2f"),
				Summarize(ratios(samples, sys, GoZero, c, Sample.CallsPerSecond)).Format("%.2f"),
				summarize(samples, sys, c, Sample.CPUPerCall).Format("%.1f"),
				Summarize(ratios(samples, sys, GRPC, c, Sample.CPUPerCall)).Format("%.2f"),
				summarize(samples, sys, c, Sample.AllocsPerCall).Format("%.1f"),
				summarize(samples, sys, c, Sample.SleepsPerCall).Format("%.2f"))
		}
	}
	if slices.ContainsFunc(samples, func(s Sample) bool { return s.System == ZrpcBase }) {
		b.WriteString("\n| callers | zrpc ÷ zrpc-base calls/s | zrpc ÷ zrpc-base CPU/call |\n|---:|---:|---:|\n")
		for _, c := range callers {
			fmt.Fprintf(&b, "| %d | %s | %s |\n", c,
				Summarize(ratios(samples, Zrpc, ZrpcBase, c, Sample.CallsPerSecond)).Format("%.3f"),
				Summarize(ratios(samples, Zrpc, ZrpcBase, c, Sample.CPUPerCall)).Format("%.3f"))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
