package stats

import "testing"

func TestSummarizeGivesTheMedianAndTheRange(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want Summary
		text string
	}{
		{nil, Summary{}, "–"},
		{[]float64{4}, Summary{4, 4, 4, 1}, "4.0"},
		{[]float64{3, 1, 2}, Summary{2, 1, 3, 3}, "2.0 (1.0–3.0)"},
		{[]float64{4, 1, 3, 2}, Summary{2.5, 1, 4, 4}, "2.5 (1.0–4.0)"},
	} {
		got := Summarize(tc.in)
		if got != tc.want || got.Format("%.1f") != tc.text {
			t.Errorf("Summarize(%v) = %+v %q, want %+v %q", tc.in, got, got.Format("%.1f"), tc.want, tc.text)
		}
	}
}

func TestNearestRankIsTheCeilingOfQTimesN(t *testing.T) {
	for _, tc := range []struct {
		q    float64
		n    int
		want int
	}{
		{0.5, 0, 0},
		{0.5, 1, 1},
		{0.99, 1, 1},
		{0.5, 2, 1},
		{0.51, 2, 2},
		{0.5, 3, 2},
		{0.5, 4, 2},
		{0.75, 4, 3},
		{0.9, 10, 9},
		{0.91, 10, 10},
		{0.5, 100, 50},
		{0.99, 100, 99},
		{0.99, 99, 99},
		{0.99, 101, 100},
		{0.07, 100, 7}, // 0.07·100 is 7.000000000000001 in floating point
		{0, 100, 1},
		{0.001, 100, 1},
		{1, 100, 100},
		{1.5, 100, 100},
	} {
		if got := NearestRank(tc.q, tc.n); got != tc.want {
			t.Errorf("NearestRank(%g, %d) = %d, want %d", tc.q, tc.n, got, tc.want)
		}
	}
}
