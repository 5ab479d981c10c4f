package balancer

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
)

// maxWRRSchedule is the longest schedule (sum of weights after dividing by
// their greatest common divisor) that a [WeightedRoundRobin] picker
// precomputes. 16384 SubConn interface values are 256 KiB at most.
const maxWRRSchedule = 1 << 14

// wrrPickerBuilder builds [WeightedRoundRobin] pickers.
//
// The order is nginx's smooth weighted round robin: each round every endpoint
// adds its weight to its current value, the endpoint with the highest current
// value (the first on ties, in address order) is picked and the sum of all
// weights is taken from its current value. Over sum(weights) picks each
// endpoint is picked exactly weight times, and picks of heavy endpoints are
// spread out rather than bunched (3:1 gives a a b a).
//
// The sequence is periodic, so the builder precomputes one period and picks
// walk it with an atomic counter, starting at a random offset so that many
// clients do not move in step. Only if the period is longer than
// maxWRRSchedule does the picker run the algorithm per pick, under a mutex.
type wrrPickerBuilder struct{}

func (wrrPickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	eps := readyEndpoints(info)
	if len(eps) == 0 {
		return errPickerNoSubConn
	}
	scs := subConns(eps)
	s := newSmoothWRR(eps)
	if s.total > maxWRRSchedule {
		return &wrrLockedPicker{scs: scs, s: s}
	}
	schedule := make([]balancer.SubConn, s.total)
	for i := range schedule {
		schedule[i] = scs[s.next()]
	}
	p := &wrrSchedulePicker{schedule: schedule}
	p.next.Store(rand.Uint64N(uint64(len(schedule))))
	return p
}

// wrrSchedulePicker walks a precomputed period of the smooth WRR sequence.
type wrrSchedulePicker struct {
	schedule []balancer.SubConn
	next     atomic.Uint64
}

func (p *wrrSchedulePicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	i := p.next.Add(1) - 1
	return balancer.PickResult{SubConn: p.schedule[i%uint64(len(p.schedule))]}, nil
}

// wrrLockedPicker runs smooth WRR per pick, for weights too uneven to
// precompute. Each pick is O(number of endpoints) under mu.
type wrrLockedPicker struct {
	scs []balancer.SubConn
	mu  sync.Mutex
	s   *smoothWRR
}

func (p *wrrLockedPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	p.mu.Lock()
	i := p.s.next()
	p.mu.Unlock()
	return balancer.PickResult{SubConn: p.scs[i]}, nil
}

// smoothWRR is the state of nginx's smooth weighted round robin.
type smoothWRR struct {
	weights []int64
	current []int64
	total   int64
}

// newSmoothWRR returns the state for eps' weights, divided by their greatest
// common divisor so that the period is as short as possible.
func newSmoothWRR(eps []endpoint) *smoothWRR {
	var g uint64
	for _, ep := range eps {
		g = gcd(g, uint64(ep.attrs.Weight))
	}
	s := &smoothWRR{weights: make([]int64, len(eps)), current: make([]int64, len(eps))}
	for i, ep := range eps {
		s.weights[i] = int64(uint64(ep.attrs.Weight) / g)
		s.total += s.weights[i]
	}
	return s
}

// next returns the index of the next endpoint.
func (s *smoothWRR) next() int {
	best := 0
	for i, w := range s.weights {
		s.current[i] += w
		if s.current[i] > s.current[best] {
			best = i
		}
	}
	s.current[best] -= s.total
	return best
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
