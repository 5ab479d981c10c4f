package balancer

import (
	"testing"

	"google.golang.org/grpc/balancer"
)

func TestLeastConnAvoidsBusySubConn(t *testing.T) {
	scs := newSubConns(3)
	pb := newLeastConnPickerBuilder()
	p := pb.Build(buildInfo(scs))
	// Calls to scs[2] never finish; the others finish at once.
	counts := make(map[balancer.SubConn]int)
	var held []balancer.PickResult
	for range 300 {
		res := pick(t, p, nil)
		counts[res.SubConn]++
		if res.SubConn == scs[2] {
			held = append(held, res)
			continue
		}
		res.Done(balancer.DoneInfo{})
	}
	if counts[scs[2]] != 1 {
		t.Fatalf("SubConn with an unfinished call picked %d times, want 1", counts[scs[2]])
	}
	// Ties are broken at random, so the idle ones share the rest.
	for _, sc := range scs[:2] {
		if counts[sc] < 60 {
			t.Fatalf("idle %s picked %d times of 299, want a fair share", sc, counts[sc])
		}
	}
	held[0].Done(balancer.DoneInfo{})
	if c := countPicks(t, p, 300)[scs[2]]; c < 30 {
		t.Fatalf("SubConn picked %d times of 300 after its call finished, want a fair share", c)
	}
}

func TestLeastConnStateSurvivesRebuild(t *testing.T) {
	scs := newSubConns(3)
	pb := newLeastConnPickerBuilder()
	// While scs[2] is the only ready SubConn, it takes 5 calls that stay
	// in flight.
	only := pb.Build(buildInfo(scs[2:]))
	for range 5 {
		pick(t, only, nil)
	}
	all := pb.Build(buildInfo(scs))
	if c := countPicks(t, all, 100)[scs[2]]; c != 0 {
		t.Fatalf("SubConn with 5 calls in flight picked %d times, want 0", c)
	}
	// Without scs[2], its state is forgotten: it comes back idle.
	pb.Build(buildInfo(scs[:2]))
	again := pb.Build(buildInfo(scs))
	if c := countPicks(t, again, 300)[scs[2]]; c < 30 {
		t.Fatalf("SubConn back after removal picked %d times of 300, want a fair share", c)
	}
}
