package balancer

import (
	"math/rand/v2"
	"testing"
)

func TestRoundRobinEven(t *testing.T) {
	for _, n := range []int{2, 3, 7} {
		scs := newSubConns(n)
		p := roundRobinPickerBuilder{}.Build(buildInfo(scs))
		const rounds = 100
		counts := countPicks(t, p, rounds*n)
		for _, sc := range scs {
			if counts[sc] != rounds {
				t.Fatalf("n=%d: %s picked %d times, want %d", n, sc, counts[sc], rounds)
			}
		}
		// In turn: n consecutive picks hit n distinct SubConns.
		seen := map[any]bool{}
		for range n {
			seen[pick(t, p, nil).SubConn] = true
		}
		if len(seen) != n {
			t.Fatalf("n=%d: %d consecutive picks hit %d SubConns", n, n, len(seen))
		}
	}
}

func TestRandomSpread(t *testing.T) {
	scs := newSubConns(4)
	p := randomPickerBuilder{}.Build(buildInfo(scs)).(*randomPicker)
	p.intN = rand.New(rand.NewPCG(1, 2)).IntN
	const picks = 1000
	counts := countPicks(t, p, picks)
	fair := picks / len(scs)
	for _, sc := range scs {
		if c := counts[sc]; c == 0 || c > 2*fair {
			t.Fatalf("%s picked %d times of %d, want 1..%d", sc, c, picks, 2*fair)
		}
	}
}
