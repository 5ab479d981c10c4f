package balancer

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ now int64 }

func (c *fakeClock) Now() int64              { return c.now }
func (c *fakeClock) Advance(d time.Duration) { c.now += int64(d) }

// p2cSim drives a p2c picker with a fake clock and a seeded random source:
// a call arrives every millisecond, and a call to SubConn sc ends
// latency(sc) later (3ms unless set) with errFor(sc). Calls end at their
// own time, in order, so the picker measures the latencies set.
type p2cSim struct {
	t       *testing.T
	clock   *fakeClock
	rng     *rand.Rand
	pb      *p2cPickerBuilder
	p       balancer.Picker
	pending []p2cPending
	latency func(balancer.SubConn) time.Duration
	errFor  func(balancer.SubConn) error
}

type p2cPending struct {
	end int64
	res balancer.PickResult
}

func newP2CSim(t *testing.T, scs []*fakeSubConn) *p2cSim {
	return newP2CSimSeed(t, scs, 1)
}

func newP2CSimSeed(t *testing.T, scs []*fakeSubConn, seed uint64) *p2cSim {
	s := &p2cSim{
		t:       t,
		clock:   &fakeClock{now: int64(time.Hour)},
		rng:     rand.New(rand.NewPCG(seed, 7)),
		pb:      newP2CPickerBuilder(),
		latency: func(balancer.SubConn) time.Duration { return 3 * time.Millisecond },
		errFor:  func(balancer.SubConn) error { return nil },
	}
	s.pb.now = s.clock.Now
	s.pb.intN = s.rng.IntN
	s.build(scs)
	return s
}

// build replaces the picker, as grpc does when the ready set changes.
func (s *p2cSim) build(scs []*fakeSubConn) { s.p = s.pb.Build(buildInfo(scs)) }

// jitter returns d ± 20%, drawn from the simulation's random source.
func (s *p2cSim) jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*s.rng.Float64()))
}

// run makes calls calls and returns how many went to each SubConn.
func (s *p2cSim) run(calls int) map[balancer.SubConn]int {
	counts := make(map[balancer.SubConn]int)
	for range calls {
		next := s.clock.now + int64(time.Millisecond)
		s.finishUntil(next)
		s.clock.now = next
		res := pick(s.t, s.p, nil)
		counts[res.SubConn]++
		s.pending = append(s.pending, p2cPending{end: s.clock.now + int64(s.latency(res.SubConn)), res: res})
	}
	return counts
}

// finishUntil ends, in order of their end, the calls that end by t.
func (s *p2cSim) finishUntil(t int64) {
	slices.SortStableFunc(s.pending, func(a, b p2cPending) int { return int(a.end - b.end) })
	n := 0
	for _, c := range s.pending {
		if c.end > t {
			break
		}
		s.clock.now = max(s.clock.now, c.end)
		c.res.Done(balancer.DoneInfo{Err: s.errFor(c.res.SubConn)})
		n++
	}
	s.pending = slices.Delete(s.pending, 0, n)
}

// idle lets d pass without new calls: the calls pending end at their own
// time (not d late, which would sample them as d long).
func (s *p2cSim) idle(d time.Duration) {
	end := s.clock.now + int64(d)
	s.finishUntil(end)
	s.clock.now = end
}

// share returns sc's fraction of counts.
func share(counts map[balancer.SubConn]int, sc balancer.SubConn) float64 {
	total := 0
	for _, n := range counts {
		total += n
	}
	return float64(counts[sc]) / float64(total)
}

// Sequential calls (each ends before the next starts) spread evenly: no
// instance is starved because its first calls happened to be slower.
func TestP2CEqualServersShareSequentialCalls(t *testing.T) {
	for _, tc := range []struct {
		servers  int
		minShare float64
	}{{2, 0.40}, {3, 0.25}} {
		for seed := range uint64(20) {
			scs := newSubConns(tc.servers)
			sim := newP2CSimSeed(t, scs, seed)
			sim.latency = func(balancer.SubConn) time.Duration { return sim.jitter(600 * time.Microsecond) }
			counts := sim.run(600)
			for _, sc := range scs {
				if s := share(counts, sc); s < tc.minShare {
					t.Fatalf("%d servers, seed %d: %s got %.1f%% of 600 sequential calls, want at least %.0f%%: %v",
						tc.servers, seed, sc, 100*s, 100*tc.minShare, counts)
				}
			}
		}
	}
}

// The first call to an instance may be slow (cold caches, a new
// connection); that must not keep it from its share.
func TestP2CSlowFirstCallIsForgotten(t *testing.T) {
	scs := newSubConns(3)
	sim := newP2CSim(t, scs)
	first := true
	sim.latency = func(sc balancer.SubConn) time.Duration {
		if sc == scs[0] && first {
			first = false
			return 200 * time.Millisecond
		}
		return sim.jitter(600 * time.Microsecond)
	}
	sim.run(2000)
	counts := sim.run(600)
	if s := share(counts, scs[0]); s < 0.25 {
		t.Fatalf("instance whose first call was slow got %.1f%% of calls 2s later, want at least 25%%: %v", 100*s, counts)
	}
}

// An instance added to a busy set gets its share within 2 s.
func TestP2CAddedInstanceGetsItsShare(t *testing.T) {
	scs := newSubConns(3)
	sim := newP2CSim(t, scs)
	sim.latency = func(balancer.SubConn) time.Duration { return sim.jitter(3 * time.Millisecond) }
	sim.build(scs[:2])
	sim.run(5000)
	sim.build(scs)
	sim.run(1000)
	counts := sim.run(1000) // the second second after it was added
	if s := share(counts, scs[2]); s < 0.25 {
		t.Fatalf("added instance got %.1f%% of calls in its second second, want at least 25%%: %v", 100*s, counts)
	}
}

// A new instance starts at the median cost of the others: not flooded as
// if free, not starved behind a penalty.
func TestP2CAddedInstanceStartsAtMedianCost(t *testing.T) {
	scs := newSubConns(4)
	sim := newP2CSim(t, scs)
	sim.build(scs[:3])
	conns := sim.pb.states.current()
	for i, c := range conns {
		c.cost.Store(math.Float64bits(float64(i+1) * 1e6))
		c.stamp.Store(sim.clock.now)
	}
	sim.build(scs)
	for _, c := range sim.pb.states.current() {
		if c.sc == scs[3] {
			if got := c.costAt(sim.clock.now); got != 2e6 {
				t.Fatalf("new instance's cost %v, want the median 2e6", got)
			}
			return
		}
	}
	t.Fatal("new instance has no state")
}

// The cost decays with wall time whether or not the SubConn is picked, and
// a longer call sets it at once.
func TestP2CCostDecaysAndJumpsToPeaks(t *testing.T) {
	c := newP2CConn(endpoint{addr: "a"}, 0, 0)
	c.begin(-int64(10 * time.Millisecond))
	c.observe(0, -int64(10*time.Millisecond), nil)
	if got := c.costAt(0); got != float64(10*time.Millisecond) {
		t.Fatalf("cost after a 10ms call %v, want 10ms", got)
	}
	if got, want := c.costAt(int64(p2cDecay)), float64(10*time.Millisecond)/math.E; math.Abs(got-want) > 1 {
		t.Fatalf("cost one decay time later %v, want %v", got, want)
	}
	c.begin(int64(p2cDecay) - int64(50*time.Millisecond))
	c.observe(int64(p2cDecay), int64(p2cDecay)-int64(50*time.Millisecond), nil)
	if got := c.costAt(int64(p2cDecay)); got != float64(50*time.Millisecond) {
		t.Fatalf("cost after a 50ms peak %v, want 50ms", got)
	}
}

// An instance slow for one second gets its share back within 3 s of
// recovering.
func TestP2CRecoversShareAfterSlowSpell(t *testing.T) {
	scs := newSubConns(3)
	sim := newP2CSim(t, scs)
	slow := false
	sim.latency = func(sc balancer.SubConn) time.Duration {
		if sc == scs[0] && slow {
			return 50 * time.Millisecond
		}
		return sim.jitter(3 * time.Millisecond)
	}
	sim.run(5000)
	slow = true
	during := sim.run(1000)
	slow = false
	if s := share(during, scs[0]); s > 0.1 {
		t.Fatalf("instance got %.1f%% of calls while 15x slower, want under 10%%: %v", 100*s, during)
	}
	sim.run(2000)
	counts := sim.run(1000) // the third second after it recovered
	if s := share(counts, scs[0]); s < 0.25 {
		t.Fatalf("recovered instance got %.1f%% of calls in the third second, want at least 25%%: %v", 100*s, counts)
	}
}

// A server twice as slow as the others gets clearly less than they do.
func TestP2CSlowerServerGetsLess(t *testing.T) {
	scs := newSubConns(3)
	sim := newP2CSim(t, scs)
	sim.latency = func(sc balancer.SubConn) time.Duration {
		if sc == scs[0] {
			return sim.jitter(6 * time.Millisecond)
		}
		return sim.jitter(3 * time.Millisecond)
	}
	sim.run(2000)
	counts := sim.run(3000)
	for _, fast := range scs[1:] {
		if counts[scs[0]]*3 > counts[fast]*2 {
			t.Fatalf("2x slower instance got %d calls, fast %s %d: want under two thirds of it: %v", counts[scs[0]], fast, counts[fast], counts)
		}
	}
	if counts[scs[0]] == 0 {
		t.Fatalf("2x slower instance starved: %v", counts)
	}
}

func TestP2CAvoidsSlowSubConn(t *testing.T) {
	scs := newSubConns(3)
	slow := scs[0]
	sim := newP2CSim(t, scs)
	sim.latency = func(sc balancer.SubConn) time.Duration {
		if sc == slow {
			return 100 * time.Millisecond
		}
		return 2 * time.Millisecond
	}
	sim.run(2000)
	const calls = 2000
	counts := sim.run(calls)
	if c := counts[slow]; c > calls/20 {
		t.Fatalf("slow SubConn got %d of %d calls, want under 5%%: %v", c, calls, counts)
	}
	for _, sc := range scs[1:] {
		if c := counts[sc]; c < calls*3/10 {
			t.Fatalf("fast %s got %d of %d calls, want over 30%%: %v", sc, c, calls, counts)
		}
	}
}

func TestP2CErrors(t *testing.T) {
	for _, tc := range []struct {
		code    codes.Code
		avoided bool
	}{
		{codes.Unavailable, true},
		{codes.ResourceExhausted, true},
		{codes.DeadlineExceeded, true},
		{codes.NotFound, false},
		{codes.InvalidArgument, false},
		{codes.Canceled, false},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			scs := newSubConns(3)
			failing := scs[0]
			sim := newP2CSim(t, scs)
			sim.errFor = func(sc balancer.SubConn) error {
				if sc == failing {
					return status.Error(tc.code, "failed")
				}
				return nil
			}
			sim.run(2000)
			const calls = 2000
			counts := sim.run(calls)
			share := float64(counts[failing]) / calls
			if tc.avoided && share > 0.01 {
				t.Fatalf("SubConn failing with %v got %.1f%% of calls, want under 1%%: %v", tc.code, 100*share, counts)
			}
			if !tc.avoided && share < 0.2 {
				t.Fatalf("SubConn failing with %v got %.1f%% of calls, want a fair share: %v", tc.code, 100*share, counts)
			}
		})
	}
}

func TestP2CRecoversAfterErrors(t *testing.T) {
	scs := newSubConns(2)
	flaky := scs[0]
	sim := newP2CSim(t, scs)
	failing := true
	sim.errFor = func(sc balancer.SubConn) error {
		if sc == flaky && failing {
			return status.Error(codes.Unavailable, "down")
		}
		return nil
	}
	sim.run(2000)
	if n := sim.run(1000)[flaky]; n > 20 {
		t.Fatalf("failing SubConn got %d of 1000 calls", n)
	}
	// Healthy again: its cost decays until it is tried, the call succeeds
	// and it shares the load again.
	failing = false
	sim.run(10000)
	if n := sim.run(1000)[flaky]; n < 300 {
		t.Fatalf("recovered SubConn got %d of 1000 calls, want a fair share", n)
	}
}

func TestP2CInflightSurvivesRebuild(t *testing.T) {
	scs := newSubConns(2)
	pb := newP2CPickerBuilder()
	p := pb.Build(buildInfo(scs))
	var held []balancer.PickResult
	for range 10 {
		held = append(held, pick(t, p, nil))
	}
	pb.Build(buildInfo(scs))
	conns := pb.states.current()
	if got := conns[0].inflight.Load() + conns[1].inflight.Load(); got != 10 {
		t.Fatalf("in-flight count %d after a rebuild, want 10", got)
	}
	for _, res := range held {
		res.Done(balancer.DoneInfo{})
	}
	if got := conns[0].inflight.Load() + conns[1].inflight.Load(); got != 0 {
		t.Fatalf("in-flight count %d after all calls ended, want 0", got)
	}
}

// An instance whose calls hang (its host cut off by a network that drops
// packets) gives no sample: it must not look cheaper and cheaper as its
// cost decays, and draw every new call into the hang. Once its oldest
// calls are older than the other instance's calls take, it gets none.
func TestP2CStopsPickingAnInstanceWhoseCallsHang(t *testing.T) {
	scs := newSubConns(2)
	sim := newP2CSim(t, scs)
	sim.run(200) // both answer in 3 ms
	sim.latency = func(sc balancer.SubConn) time.Duration {
		if sc == scs[0] {
			return time.Hour // hangs
		}
		return 3 * time.Millisecond
	}
	counts := sim.run(2000) // 2 s of calls, one a millisecond
	if counts[scs[0]] > 10 {
		t.Fatalf("the hung instance was picked for %d of 2000 calls over 2 s (%v); want a handful, before its calls were older than the other's take",
			counts[scs[0]], counts)
	}
	conns := sim.pb.states.current() // in no particular order
	hung := conns[slices.IndexFunc(conns, func(c *p2cConn) bool { return c.addr == scs[0].addr })]
	if n := hung.inflight.Load(); n != int64(counts[scs[0]]) {
		t.Fatalf("%d calls in flight on the hung instance, want the %d sent it", n, counts[scs[0]])
	}
}

// Calls in flight count: of two equal SubConns, the one with fewer
// unfinished calls is picked.
func TestP2CCountsCallsInFlight(t *testing.T) {
	scs := newSubConns(2)
	sim := newP2CSim(t, scs)
	counts := make(map[balancer.SubConn]int)
	for i := range 40 {
		counts[pick(t, sim.p, nil).SubConn]++ // held: none ends
		if d := counts[scs[0]] - counts[scs[1]]; d > 1 || d < -1 {
			t.Fatalf("after %d unfinished calls: %v, want them alternating", i+1, counts)
		}
	}
}

// The mean age of the calls in flight stays right however long the
// process has run and however many calls are in flight: a sum of their
// start times past int64 must not make the instance look as if its calls
// had hung for years.
func TestP2CCallsInFlightAgeAfterLongUptime(t *testing.T) {
	const uptime = 365 * 24 * time.Hour
	for _, n := range []int64{1, 400, 100_000} {
		now := int64(uptime)
		c := newP2CConn(endpoint{addr: "a"}, float64(time.Millisecond), now)
		for range n {
			c.begin(now)
		}
		now += int64(time.Second)
		want := float64(time.Second) * float64(n+1) // mean age 1 s, n+1
		if got := c.load(now); got < want*0.99 || got > want*1.01 {
			t.Errorf("%d calls in flight for 1 s after %v of uptime: load %g, want %g", n, uptime, got, want)
		}
	}
}
