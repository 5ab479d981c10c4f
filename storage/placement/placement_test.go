package placement

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"testing"
)

func nodes(n int, zones ...string) []Node {
	out := make([]Node, n)
	for i := range out {
		out[i].ID = fmt.Sprintf("agent-%d", i+1)
		if len(zones) > 0 {
			out[i].Zone = zones[i%len(zones)]
		}
	}
	return out
}

func ids(ns []Node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.ID
	}
	return out
}

func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%016x/%d", uint64(i)*0x9e3779b97f4a7c15, i%7)
	}
	return out
}

// The score is FNV-1a 64 over key, a 0xff byte and the node id, then the
// MurmurHash3 finaliser: spelled out here with the standard library so
// that another implementation can match it.
func TestScoreIsSpecified(t *testing.T) {
	fmix := func(h uint64) uint64 {
		h ^= h >> 33
		h *= 0xff51afd7ed558ccd
		h ^= h >> 33
		h *= 0xc4ceb9fe1a85ec53
		return h ^ h>>33
	}
	for _, kv := range [][2]string{{"", ""}, {"k", "n"}, {"0123456789abcdef/3", "agent-7"}, {"ab", "c"}} {
		f := fnv.New64a()
		f.Write([]byte(kv[0] + "\xff" + kv[1]))
		if got, want := score(kv[0], kv[1]), fmix(f.Sum64()); got != want {
			t.Errorf("score(%q, %q) = %#x, want %#x", kv[0], kv[1], got, want)
		}
	}
	if score("ab", "c") == score("a", "bc") {
		t.Error("the key/id boundary does not change the score")
	}
}

// Golden orders: every agent, every version, must compute these. A change
// here moves every stored shard.
func TestRankGolden(t *testing.T) {
	for key, want := range map[string][]string{
		"":                   {"agent-4", "agent-3", "agent-5", "agent-1", "agent-6", "agent-2"},
		"0123456789abcdef/0": {"agent-6", "agent-3", "agent-1", "agent-4", "agent-2", "agent-5"},
		"0123456789abcdef/1": {"agent-5", "agent-2", "agent-3", "agent-6", "agent-1", "agent-4"},
	} {
		if got := ids(Rank(key, nodes(6))); !slices.Equal(got, want) {
			t.Errorf("Rank(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestRankIsDeterministicAndIgnoresInputOrder(t *testing.T) {
	ns := nodes(9, "a", "b", "c")
	r := rand.New(rand.NewPCG(1, 2))
	for _, key := range keys(200) {
		want := Rank(key, ns)
		shuffled := slices.Clone(ns)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if got := Rank(key, shuffled); !slices.Equal(got, want) {
			t.Fatalf("Rank(%q) depends on input order: %v vs %v", key, ids(got), ids(want))
		}
		if !slices.Equal(ns, nodes(9, "a", "b", "c")) {
			t.Fatal("Rank modified its input")
		}
		if len(want) != len(ns) {
			t.Fatalf("Rank returned %d of %d nodes", len(want), len(ns))
		}
	}
	if Rank("k", nil) == nil || len(Rank("k", nil)) != 0 {
		t.Error("Rank of no nodes is not an empty slice")
	}
}

// Equal ids (the same node listed twice) tie on score and are ordered by
// zone, so Rank stays deterministic.
func TestRankTies(t *testing.T) {
	ns := []Node{{ID: "x", Zone: "b"}, {ID: "x", Zone: "a"}}
	got := Rank("k", ns)
	if got[0].Zone != "a" || got[1].Zone != "b" {
		t.Errorf("Rank of equal ids = %v, want zone a first", got)
	}
	if p := Place("k", ns, 2, 0); len(p) != 1 || p[0] != (Node{ID: "x", Zone: "a"}) {
		t.Errorf("Place of a node listed twice = %v, want it once", p)
	}
}

func TestPlacePicksDistinctNodesInRankOrder(t *testing.T) {
	ns := nodes(8)
	for _, key := range keys(300) {
		for n := 0; n <= 10; n++ {
			got := Place(key, ns, n, 0)
			if want := min(n, len(ns)); len(got) != want {
				t.Fatalf("Place(%q, n=%d) returned %d nodes, want %d", key, n, len(got), want)
			}
			if !slices.Equal(got, Rank(key, ns)[:len(got)]) {
				t.Fatalf("Place(%q, n=%d) = %v, not the rendezvous prefix", key, n, ids(got))
			}
		}
	}
}

// Over a fixed key set, each node is first choice about equally often and
// holds about its share of 4+2 placements. The key set is fixed, so the
// bounds (loose: chi-square with 9 degrees of freedom is above 40 with
// probability ~1e-5 for a fair hash) cannot flake.
func TestDistributionIsEven(t *testing.T) {
	ns := nodes(10)
	const nKeys = 20000
	first := map[string]int{}
	held := map[string]int{}
	for _, key := range keys(nKeys) {
		first[Rank(key, ns)[0].ID]++
		for _, n := range Place(key, ns, 6, 0) {
			held[n.ID]++
		}
	}
	for name, counts := range map[string]map[string]int{"first choice": first, "4+2 holders": held} {
		total := 0
		for _, c := range counts {
			total += c
		}
		mean := float64(total) / float64(len(ns))
		chi2 := 0.0
		for _, n := range ns {
			d := float64(counts[n.ID]) - mean
			chi2 += d * d / mean
			if d > 0.1*mean || d < -0.1*mean {
				t.Errorf("%s: %s has %d, mean %.0f", name, n.ID, counts[n.ID], mean)
			}
		}
		if chi2 > 40 {
			t.Errorf("%s: chi-square %.1f over %d nodes, counts %v", name, chi2, len(ns), counts)
		}
		t.Logf("%s: chi-square %.1f (9 degrees of freedom)", name, chi2)
	}
}

// Removing a node moves only the keys it held: every other key keeps its
// exact placement, and a key that had it keeps its other holders.
func TestRemovingANodeMovesOnlyItsKeys(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes []Node
		cap   int
	}{
		{"no zones", nodes(10), 0},
		{"three zones, cap 2", nodes(10, "a", "b", "c"), 2},
		{"two zones, cap 2 relaxed", nodes(7, "a", "b"), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for gone := range tc.nodes {
				rest := slices.Delete(slices.Clone(tc.nodes), gone, gone+1)
				moved := 0
				for _, key := range keys(500) {
					before := Place(key, tc.nodes, 6, tc.cap)
					after := Place(key, rest, 6, tc.cap)
					if !slices.Contains(before, tc.nodes[gone]) {
						if !slices.Equal(before, after) {
							t.Fatalf("removing %s moved %q: %v -> %v", tc.nodes[gone].ID, key, ids(before), ids(after))
						}
						continue
					}
					moved++
					if tc.cap == 0 {
						for _, n := range before {
							if n != tc.nodes[gone] && !slices.Contains(after, n) {
								t.Fatalf("removing %s dropped %s from %q", tc.nodes[gone].ID, n.ID, key)
							}
						}
					}
				}
				if moved == 0 {
					t.Fatalf("%s held none of 500 keys", tc.nodes[gone].ID)
				}
			}
		})
	}
}

func zoneCounts(ns []Node) map[string]int {
	c := map[string]int{}
	for _, n := range ns {
		c[n.Zone]++
	}
	return c
}

func TestPlaceZoneLimit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		nodes   []Node
		n, cap  int
		wantMax int // most nodes any zone may get
	}{
		{"three zones of three, cap 2", nodes(9, "a", "b", "c"), 6, 2, 2},
		{"six zones, cap 1", nodes(12, "a", "b", "c", "d", "e", "f"), 6, 1, 1},
		{"uneven zones, cap 2 possible", append(nodes(6, "a"), Node{"b1", "b"}, Node{"b2", "b"}, Node{"c1", "c"}, Node{"d1", "d"}), 6, 2, 2},
		{"two zones, cap 2 relaxed to 3", nodes(10, "a", "b"), 6, 2, 3},
		{"one zone, relaxed to all", nodes(8, "a"), 6, 2, 6},
		{"empty zone is a zone", nodes(8, "", "x"), 6, 2, 3},
		{"five zones, 4+2, cap 2", nodes(10, "a", "b", "c", "d", "e"), 6, 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, key := range keys(300) {
				got := Place(key, tc.nodes, tc.n, tc.cap)
				if len(got) != tc.n {
					t.Fatalf("%q: %d nodes, want %d", key, len(got), tc.n)
				}
				seen := map[string]bool{}
				for _, n := range got {
					if seen[n.ID] {
						t.Fatalf("%q: %s picked twice", key, n.ID)
					}
					seen[n.ID] = true
				}
				for zone, c := range zoneCounts(got) {
					if c > tc.wantMax {
						t.Fatalf("%q: zone %q has %d of %v, want at most %d", key, zone, c, ids(got), tc.wantMax)
					}
				}
				// Still rendezvous order, best first.
				rank := ids(Rank(key, tc.nodes))
				pos := func(id string) int { return slices.Index(rank, id) }
				if !slices.IsSortedFunc(got, func(a, b Node) int { return pos(a.ID) - pos(b.ID) }) {
					t.Fatalf("%q: %v not in rank order", key, ids(got))
				}
			}
		})
	}
}

func TestPlaceFewerOnlyWhenTooFewNodes(t *testing.T) {
	ns := nodes(4, "a", "b")
	if got := Place("k", ns, 6, 1); len(got) != 4 {
		t.Errorf("Place of 6 on 4 nodes returned %d, want all 4", len(got))
	}
	if got := Place("k", nil, 3, 1); len(got) != 0 {
		t.Errorf("Place on no nodes returned %v", got)
	}
	if got := Place("k", ns, 0, 1); got != nil {
		t.Errorf("Place of 0 returned %v", got)
	}
	if got := Place("k", ns, -1, 1); got != nil {
		t.Errorf("Place of -1 returned %v", got)
	}
}

func TestDefaultScheme(t *testing.T) {
	for _, tc := range []struct{ size, k, m int }{
		{-1, 1, 0}, {0, 1, 0}, {1, 1, 0}, {2, 1, 1}, {3, 2, 1}, {4, 2, 1},
		{5, 3, 2}, {6, 4, 2}, {7, 4, 2}, {100, 4, 2},
	} {
		k, m := DefaultScheme(tc.size)
		if k != tc.k || m != tc.m {
			t.Errorf("DefaultScheme(%d) = %d+%d, want %d+%d", tc.size, k, m, tc.k, tc.m)
		}
		if tc.size >= 1 && k+m > tc.size {
			t.Errorf("DefaultScheme(%d) = %d+%d needs more agents than there are", tc.size, k, m)
		}
	}
}

func BenchmarkPlace(b *testing.B) {
	ns := nodes(50, "a", "b", "c")
	b.ReportAllocs()
	for b.Loop() {
		Place("0123456789abcdef/17", ns, 6, 2)
	}
}
