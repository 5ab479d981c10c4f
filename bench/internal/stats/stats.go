// Package stats summarises a benchmark's repetitions: the median with the
// min and max, as the comparisons in docs/benchmarks.md print them; and
// the rank a quantile of one round's samples is read at.
package stats

import (
	"fmt"
	"slices"

	"github.com/zrpcio/zrpc/loadgen"
)

// Summary is the median, min and max of one measure over repetitions.
type Summary struct {
	Median, Min, Max float64
	N                int
}

// Summarize returns the median (the mean of the middle two for an even
// count), min and max of v.
func Summarize(v []float64) Summary {
	if len(v) == 0 {
		return Summary{}
	}
	s := slices.Sorted(slices.Values(v))
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return Summary{Median: med, Min: s[0], Max: s[n-1], N: n}
}

// Format prints the median and, over more than one repetition, the range
// "median (min–max)", each with verb; "–" when there is nothing.
func (s Summary) Format(verb string) string {
	if s.N == 0 {
		return "–"
	}
	f := func(v float64) string { return fmt.Sprintf(verb, v) }
	if s.N == 1 {
		return f(s.Median)
	}
	return f(s.Median) + " (" + f(s.Min) + "–" + f(s.Max) + ")"
}

// NearestRank returns the 1-based rank of quantile q (0.99 for p99) among
// n sorted values by the nearest-rank definition, as zrpcctl bench's
// histogram reads it (loadgen.NearestRank): ceil(q·n), within [1, n]; the
// p99 of 100 values is the 99th. It is 0 when n is.
func NearestRank(q float64, n int) int {
	if n <= 0 {
		return 0
	}
	return int(loadgen.NearestRank(q, uint64(n)))
}
