package blobbench

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/zrpcio/zrpc/bench/internal/stats"
)

// Summary is the median, min and max of one measure over repetitions.
type Summary = stats.Summary

// Summarize returns the median, min and max of v.
func Summarize(v []float64) Summary { return stats.Summarize(v) }

// measure picks one number out of a sample.
type measure func(Sample) float64

// values returns m of the samples of sys's op, by repetition.
func values(samples []Sample, sys System, op string, m measure) map[int]float64 {
	out := map[int]float64{}
	for _, s := range samples {
		if s.System == sys && s.Op == op {
			out[s.Rep] = m(s)
		}
	}
	return out
}

func summarize(samples []Sample, sys System, op string, m measure) Summary {
	var v []float64
	for _, x := range values(samples, sys, op, m) {
		v = append(v, x)
	}
	return Summarize(v)
}

// ratios returns, for every repetition that measured both, sys's op
// throughput divided by base's baseOp throughput in that repetition.
func ratios(samples []Sample, sys System, op string, base System, baseOp string) []float64 {
	b := values(samples, base, baseOp, Sample.MBPerSecond)
	var out []float64
	for rep, v := range values(samples, sys, op, Sample.MBPerSecond) {
		if d, ok := b[rep]; ok && d != 0 {
			out = append(out, v/d)
		}
	}
	return out
}

// baselineOp is the plain stream's operation an operation is compared
// with: a degraded get with the stream's get.
func baselineOp(op string) string {
	if op == OpDegradedGet {
		return OpGet
	}
	return op
}

// WriteTable writes a markdown table: for every operation and system, MB/s,
// its ratio to the plain stream's same operation (a degraded get to its
// get) and, for puts, to cp + fsync, within each repetition, and the CPU
// seconds per GB of the server side (the agents, or the stream server) and
// of the client process; each as median (min–max) over the repetitions.
func WriteTable(w io.Writer, samples []Sample) error {
	var systems []System
	for _, s := range samples {
		if !slices.Contains(systems, s.System) {
			systems = append(systems, s.System)
		}
	}
	slices.SortFunc(systems, func(a, b System) int {
		return strings.Compare(sortKey(a), sortKey(b))
	})
	stream, cp := System{Name: Stream}, System{Name: Copy}
	var b strings.Builder
	b.WriteString("| op | system | MB/s | × grpc-stream | × cp+fsync | server CPU s/GB | client CPU s/GB |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|\n")
	for _, op := range []string{OpPut, OpGet, OpDegradedGet} {
		for _, sys := range systems {
			mbs := summarize(samples, sys, op, Sample.MBPerSecond)
			if mbs.N == 0 {
				continue
			}
			vsStream, vsCopy := "–", "–"
			if sys != stream || op != baselineOp(op) {
				vsStream = Summarize(ratios(samples, sys, op, stream, baselineOp(op))).Format("%.2f")
			}
			if op == OpPut && sys != cp {
				vsCopy = Summarize(ratios(samples, sys, op, cp, OpPut)).Format("%.2f")
			}
			server := "–"
			if sys != cp {
				server = summarize(samples, sys, op, Sample.ServerCPUPerGB).Format("%.2f")
			}
			client := summarize(samples, sys, op, func(s Sample) float64 { return s.ClientCPUSeconds / (float64(s.Bytes) / 1e9) })
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", op, sys, mbs.Format("%.0f"), vsStream, vsCopy, server, client.Format("%.2f"))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// sortKey orders the table's systems: the baselines first, then zrpc by
// block size and agent count.
func sortKey(s System) string {
	switch s.Name {
	case Stream:
		return "0"
	case Copy:
		return "1"
	}
	return fmt.Sprintf("2 %012d %06d", s.BlockSize, s.Agents)
}

// WriteJSON writes s as one JSON line.
func WriteJSON(w io.Writer, s Sample) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// sizeUnits are the suffixes ParseSize takes, longest first.
var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}}

// ParseSize reads a size in bytes: a number with an optional KiB, MiB or
// GiB suffix (K, M and G mean the same).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a non-negative number of bytes, optionally with KiB, MiB or GiB (e.g. 256MiB)", s)
	}
	return n * mult, nil
}

// FormatSize writes a size as ParseSize reads it, in the largest unit
// that divides it.
func FormatSize(n int64) string {
	for _, u := range sizeUnits[:3] {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + " " + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + " B"
}
