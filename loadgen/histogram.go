package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// Histogram layout: durations in nanoseconds. Values below 2^subBits are
// counted exactly; above, every power of two is cut into 2^subBits
// buckets of equal width, so a bucket's width is at most 1/128 of its
// values (HdrHistogram's layout at two significant digits). Values up to
// 2^maxBits ns (about 18 minutes) are told apart; longer ones count in the
// last bucket and only max keeps their value.
const (
	subBits    = 7
	subBuckets = 1 << subBits
	maxBits    = 40
	groups     = maxBits - subBits + 1
	nBuckets   = groups * subBuckets
)

// Histogram counts latencies in log-linear buckets: a fixed ~35 KiB,
// whatever the number of values, with a relative error below 1%. Min, max
// and the sum are exact. It is not safe for concurrent use: each caller
// records into its own and Merge adds them up.
type Histogram struct {
	counts   []uint64
	n        uint64
	sum      time.Duration
	min, max time.Duration
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{counts: make([]uint64, nBuckets)}
}

// bucketOf returns the index of the bucket counting v nanoseconds.
func bucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	k := bits.Len64(v) - 1 // v is in [2^k, 2^(k+1))
	if k >= maxBits {
		return nBuckets - 1
	}
	shift := k - subBits
	return (shift+1)<<subBits + int(v>>shift) - subBuckets
}

// bucketBounds returns the smallest and the largest value bucket i counts.
func bucketBounds(i int) (lo, hi uint64) {
	g, r := i>>subBits, uint64(i&(subBuckets-1))
	if g == 0 {
		return r, r
	}
	width := uint64(1) << (g - 1)
	lo = (subBuckets + r) * width
	return lo, lo + width - 1
}

// Record counts one latency; negative ones count as zero.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
	h.sum += d
	h.counts[bucketOf(uint64(d))]++
}

// Merge adds o's values to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
	for i, c := range o.counts {
		h.counts[i] += c
	}
}

// Count returns the number of values recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Min returns the smallest value (0 when empty).
func (h *Histogram) Min() time.Duration { return h.min }

// Max returns the largest value (0 when empty).
func (h *Histogram) Max() time.Duration { return h.max }

// Mean returns the average value (0 when empty).
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}

// Quantile returns the value at quantile q (0.99 for p99): the largest
// value of the bucket holding the ceil(q·n)-th smallest value, within
// [Min, Max] (Max itself for the largest value and beyond the buckets'
// range). It is 0 when the histogram is empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := NearestRank(q, h.n)
	if rank == h.n {
		return h.max
	}
	var seen uint64
	for i, c := range h.counts[:nBuckets-1] {
		if seen += c; seen >= rank {
			_, hi := bucketBounds(i)
			return min(max(time.Duration(hi), h.min), h.max)
		}
	}
	return h.max
}

// NearestRank returns the 1-based rank of quantile q among n sorted
// values by the nearest-rank definition: ceil(q·n), within [1, n]. A
// product q·n that lands a rounding error above a whole number (0.07·100
// is 7.000000000000001 in floating point) counts as that number, or the
// rank would be one too high.
func NearestRank(q float64, n uint64) uint64 {
	x := q * float64(n)
	if r := math.Round(x); math.Abs(x-r) <= 1e-9*max(1, r) {
		x = r
	}
	switch {
	case !(x > 1): // also a q below 0 or NaN
		return 1
	case x >= float64(n):
		return n
	}
	return uint64(math.Ceil(x))
}

// CountAtMost returns how many values are at most d, to the histogram's
// precision (a bucket counts as at most d when its smallest value is).
func (h *Histogram) CountAtMost(d time.Duration) uint64 {
	if d < 0 {
		return 0
	}
	if d >= h.max {
		return h.n
	}
	last := bucketOf(uint64(d))
	var n uint64
	for _, c := range h.counts[:last+1] {
		n += c
	}
	return n
}

// Bin is one row of a histogram drawn as text: the values above the
// previous row's UpTo and at most this one's.
type Bin struct {
	UpTo  time.Duration
	Count uint64
}

// Bins cuts [Min, Max] into at most n rows whose bounds grow by the same
// factor (latencies spread over orders of magnitude) and counts the values
// of each. The counts add up to Count. An empty histogram has no rows.
func (h *Histogram) Bins(n int) []Bin {
	if h.n == 0 || n < 1 {
		return nil
	}
	lo, hi := float64(max(h.min, 1)), float64(h.max)
	if n == 1 || hi <= lo {
		return []Bin{{UpTo: h.max, Count: h.n}}
	}
	step := math.Pow(hi/lo, 1/float64(n-1))
	var bins []Bin
	var below uint64
	for i := range n {
		upTo := time.Duration(lo * math.Pow(step, float64(i)))
		if i == n-1 {
			upTo = h.max
		}
		if len(bins) > 0 && upTo <= bins[len(bins)-1].UpTo {
			continue // finer than the buckets
		}
		at := h.CountAtMost(upTo)
		bins = append(bins, Bin{UpTo: upTo, Count: at - below})
		below = at
	}
	return bins
}
