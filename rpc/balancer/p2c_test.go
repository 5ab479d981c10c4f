package balancer

import (
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

// p2cSim drives a p2c picker with a fake clock: a call arrives every
// millisecond, and a call to SubConn sc ends latency(sc) later (3ms unless
// set) with errFor(sc), so a few calls are in flight at any time.
type p2cSim struct {
	t       *testing.T
	clock   *fakeClock
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
	s := &p2cSim{
		t:       t,
		clock:   &fakeClock{now: int64(time.Hour)},
		pb:      newP2CPickerBuilder(),
		latency: func(balancer.SubConn) time.Duration { return 3 * time.Millisecond },
		errFor:  func(balancer.SubConn) error { return nil },
	}
	s.pb.now = s.clock.Now
	s.p = s.pb.Build(buildInfo(scs))
	return s
}

// run makes calls calls and returns how many went to each SubConn.
func (s *p2cSim) run(calls int) map[balancer.SubConn]int {
	counts := make(map[balancer.SubConn]int)
	for range calls {
		s.clock.Advance(time.Millisecond)
		kept := s.pending[:0]
		for _, c := range s.pending {
			if c.end <= s.clock.now {
				c.res.Done(balancer.DoneInfo{Err: s.errFor(c.res.SubConn)})
			} else {
				kept = append(kept, c)
			}
		}
		s.pending = kept
		res := pick(s.t, s.p, nil)
		counts[res.SubConn]++
		s.pending = append(s.pending, p2cPending{end: s.clock.now + int64(s.latency(res.SubConn)), res: res})
	}
	return counts
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
			if tc.avoided && share > 0.05 {
				t.Fatalf("SubConn failing with %v got %.1f%% of calls, want under 5%%: %v", tc.code, 100*share, counts)
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
	if n := sim.run(1000)[flaky]; n > 50 {
		t.Fatalf("failing SubConn got %d of 1000 calls", n)
	}
	// Healthy again: probes (at least one a second) succeed and its score
	// comes back, so within a minute of fake time it shares the load.
	failing = false
	sim.run(60000)
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
	conns := pb.states.refresh(readyEndpoints(buildInfo(scs)), newP2CConn)
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
