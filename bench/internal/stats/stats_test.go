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
