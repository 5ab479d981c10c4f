package registry

import (
	"slices"
	"sync"
	"time"

	"github.com/zrpcio/zrpc/bench/internal/stats"
)

// latencies collects durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// sorted returns a sorted copy of what was collected.
func (l *latencies) sorted() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.d)
	slices.Sort(s)
	return s
}

func (l *latencies) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

// quantileMS returns the q-quantile of sorted durations in milliseconds
// (nearest rank: the p99 of 100 is the 99th); 0 for none.
func quantileMS(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return ms(sorted[stats.NearestRank(q, len(sorted))-1])
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summary is the median and range of one metric over repetitions.
type summary = stats.Summary

// summarize returns the median (the mean of the middle two for an even
// count), min and max of v.
func summarize(v []float64) summary { return stats.Summarize(v) }

// ratio is a/b, and false when b is zero (no ratio to show).
func ratio(a, b float64) (float64, bool) {
	if b == 0 {
		return 0, false
	}
	return a / b, true
}

// slot is one round of an interleaved run: which repetition, which system.
type slot struct {
	rep    int
	system string
}

// interleave returns the order of the rounds: every repetition runs each
// system once, in the order given, so systems alternate A, B, A, B, ...
// and a drift of the machine over the run touches both alike.
func interleave(reps int, systems []string) []slot {
	var out []slot
	for r := 1; r <= reps; r++ {
		for _, s := range systems {
			out = append(out, slot{rep: r, system: s})
		}
	}
	return out
}
