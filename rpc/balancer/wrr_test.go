package balancer

import (
	"testing"

	"google.golang.org/grpc/balancer"
)

func TestWeightedRoundRobin(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []uint32
		picks   int
		want    []int
		maxRun  int // most consecutive picks of the first SubConn
		locked  bool
	}{
		{name: "3:1", weights: []uint32{3, 1}, picks: 400, want: []int{300, 100}, maxRun: 3},
		{name: "5:1:1", weights: []uint32{5, 1, 1}, picks: 700, want: []int{500, 100, 100}, maxRun: 4},
		{name: "default weight", weights: []uint32{300, 0, 100}, picks: 500, want: []int{300, 100, 100}, maxRun: 3},
		{name: "equal", weights: []uint32{7, 7, 7}, picks: 300, want: []int{100, 100, 100}, maxRun: 1},
		{name: "large weights", weights: []uint32{100000, 1}, picks: 2 * 100001, want: []int{200000, 2}, maxRun: 200000, locked: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scs := newSubConns(len(tc.weights))
			p := wrrPickerBuilder{}.Build(buildInfo(scs, tc.weights...))
			if _, locked := p.(*wrrLockedPicker); locked != tc.locked {
				t.Fatalf("picker %T, want locked=%v", p, tc.locked)
			}
			counts := make(map[balancer.SubConn]int)
			run, maxRun := 0, 0
			for range tc.picks {
				sc := pick(t, p, nil).SubConn
				counts[sc]++
				if sc == scs[0] {
					run++
					maxRun = max(maxRun, run)
				} else {
					run = 0
				}
			}
			for i, sc := range scs {
				if counts[sc] != tc.want[i] {
					t.Fatalf("%s (weight %d) picked %d times, want %d", sc, tc.weights[i], counts[sc], tc.want[i])
				}
			}
			if maxRun > tc.maxRun {
				t.Fatalf("%s picked %d times in a row, want at most %d", scs[0], maxRun, tc.maxRun)
			}
		})
	}
}

func TestSmoothWRROrder(t *testing.T) {
	// nginx's example: weights 5, 1, 1 give a a b a c a a.
	scs := newSubConns(3)
	s := newSmoothWRR(readyEndpoints(buildInfo(scs, 5, 1, 1)))
	var got []int
	for range 7 {
		got = append(got, s.next())
	}
	want := []int{0, 0, 1, 0, 2, 0, 0}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order = %v, want %v", got, want)
		}
	}
}
