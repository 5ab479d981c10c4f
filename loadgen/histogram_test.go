package loadgen

import (
	"testing"
	"time"
)

func TestHistogramQuantilesAreWithinOnePercent(t *testing.T) {
	h := NewHistogram()
	// 1 µs .. 100 ms, one value per µs: quantile q is q·100 ms.
	const n = 100_000
	for i := 1; i <= n; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	if h.Count() != n || h.Min() != time.Microsecond || h.Max() != 100*time.Millisecond {
		t.Fatalf("count %d min %s max %s, want %d 1µs 100ms", h.Count(), h.Min(), h.Max(), n)
	}
	if want := (n + 1) * time.Microsecond / 2; h.Mean() != want {
		t.Fatalf("mean %s, want %s (exact)", h.Mean(), want)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		want := time.Duration(q * n * float64(time.Microsecond))
		got := h.Quantile(q)
		if diff := float64(got-want) / float64(want); diff < 0 || diff > 0.01 {
			t.Errorf("quantile %g = %s, want %s to +1%%", q, got, want)
		}
	}
}

func TestHistogramSmallValuesAreExact(t *testing.T) {
	h := NewHistogram()
	for _, v := range []time.Duration{3, 3, 7, 100} {
		h.Record(v)
	}
	for q, want := range map[float64]time.Duration{0.25: 3, 0.5: 3, 0.75: 7, 1: 100} {
		if got := h.Quantile(q); got != want {
			t.Errorf("quantile %g = %d ns, want %d ns", q, got, want)
		}
	}
	if got := h.CountAtMost(7); got != 3 {
		t.Errorf("CountAtMost(7ns) = %d, want 3", got)
	}
}

// TestHistogramQuantileIsTheNearestRank checks the textbook nearest-rank
// quantile, the ceil(q·n)-th smallest value, on values small enough to be
// counted exactly.
func TestHistogramQuantileIsTheNearestRank(t *testing.T) {
	upTo := func(n int) []time.Duration { // 1, 2, ..., n ns
		v := make([]time.Duration, n)
		for i := range v {
			v[i] = time.Duration(i + 1)
		}
		return v
	}
	for _, tc := range []struct {
		values []time.Duration
		q      float64
		want   time.Duration
	}{
		{upTo(1), 0.5, 1},
		{upTo(1), 0.99, 1},
		{upTo(2), 0.5, 1},
		{upTo(2), 0.51, 2},
		{upTo(3), 0.5, 2},
		{upTo(4), 0.5, 2},
		{upTo(4), 0.75, 3},
		{upTo(10), 0.9, 9},
		{upTo(10), 0.91, 10},
		{upTo(100), 0.99, 99},
		{upTo(100), 0.5, 50},
		{upTo(100), 0.07, 7}, // 0.07·100 is 7.000000000000001 in floating point
		{upTo(100), 0.001, 1},
		{upTo(100), 0, 1},
		{upTo(100), 1, 100},
		{upTo(100), 1.5, 100},
		{upTo(99), 0.99, 99},
		{upTo(101), 0.99, 100},
	} {
		h := NewHistogram()
		for _, v := range tc.values {
			h.Record(v)
		}
		if got := h.Quantile(tc.q); got != tc.want {
			t.Errorf("quantile %g of 1..%d ns = %d ns, want %d ns", tc.q, len(tc.values), got, tc.want)
		}
	}
}

func TestHistogramMergeAddsUp(t *testing.T) {
	a, b, all := NewHistogram(), NewHistogram(), NewHistogram()
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i*i) * time.Microsecond
		all.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(b)
	a.Merge(NewHistogram())
	if a.Count() != all.Count() || a.Min() != all.Min() || a.Max() != all.Max() || a.Mean() != all.Mean() {
		t.Fatalf("merged count/min/max/mean %d/%s/%s/%s, want %d/%s/%s/%s",
			a.Count(), a.Min(), a.Max(), a.Mean(), all.Count(), all.Min(), all.Max(), all.Mean())
	}
	for _, q := range []float64{0.1, 0.5, 0.99} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Errorf("merged quantile %g = %s, want %s", q, a.Quantile(q), all.Quantile(q))
		}
	}
}

func TestHistogramKeepsValuesBeyondItsRangeInMax(t *testing.T) {
	h := NewHistogram()
	h.Record(time.Millisecond)
	h.Record(time.Hour)
	h.Record(-time.Second)
	if h.Max() != time.Hour || h.Min() != 0 {
		t.Fatalf("min %s max %s, want 0 and 1h", h.Min(), h.Max())
	}
	if got := h.Quantile(1); got != time.Hour {
		t.Fatalf("p100 = %s, want 1h", got)
	}
	if got := h.CountAtMost(time.Second); got != 2 {
		t.Fatalf("CountAtMost(1s) = %d, want 2", got)
	}
}

func TestHistogramBinsAddUpAndGrowGeometrically(t *testing.T) {
	h := NewHistogram()
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * 100 * time.Microsecond) // 0.1 ms .. 100 ms
	}
	bins := h.Bins(4)
	want := []time.Duration{100 * time.Microsecond, time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond}
	if len(bins) != len(want) {
		t.Fatalf("bins %v, want 4", bins)
	}
	var total uint64
	for i, b := range bins {
		if diff := float64(b.UpTo-want[i]) / float64(want[i]); diff < -0.001 || diff > 0.001 {
			t.Errorf("bin %d ends at %s, want %s", i, b.UpTo, want[i])
		}
		total += b.Count
	}
	if total != 1000 {
		t.Fatalf("bins count %d values, want 1000", total)
	}
	if bins[0].Count != 1 || bins[3].Count < 895 || bins[3].Count > 905 {
		t.Fatalf("bins %v: want 1 value up to 0.1 ms and about 900 in (10 ms, 100 ms]", bins)
	}
	one := NewHistogram()
	one.Record(time.Second)
	if b := one.Bins(10); len(b) != 1 || b[0].Count != 1 || b[0].UpTo != time.Second {
		t.Fatalf("one value: bins %v", b)
	}
	if b := NewHistogram().Bins(10); b != nil {
		t.Fatalf("empty: bins %v", b)
	}
}
