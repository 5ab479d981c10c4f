package balancer

import (
	"math"
	"math/rand/v2"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
)

// leastConnPickerBuilder builds [LeastConn] pickers; one per ClientConn.
type leastConnPickerBuilder struct {
	states connStates[leastConnState]
}

func newLeastConnPickerBuilder() *leastConnPickerBuilder { return &leastConnPickerBuilder{} }

func (b *leastConnPickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	eps := readyEndpoints(info)
	if len(eps) == 0 {
		return errPickerNoSubConn
	}
	return &leastConnPicker{conns: b.states.refresh(eps, newLeastConnState)}
}

// leastConnState counts one SubConn's calls in flight from this ClientConn.
type leastConnState struct {
	sc       balancer.SubConn
	inflight atomic.Int64
	// done is the PickResult.Done of every pick, bound once so that picks
	// do not allocate a closure.
	done func(balancer.DoneInfo)
}

func newLeastConnState(ep endpoint) *leastConnState {
	s := &leastConnState{sc: ep.sc}
	s.done = func(balancer.DoneInfo) { s.inflight.Add(-1) }
	return s
}

// leastConnPicker picks the SubConn with the fewest calls in flight, at
// random among those tied for fewest (reservoir sampling, one pass). A pick
// reads every SubConn's counter: O(n), no locks.
type leastConnPicker struct {
	conns []*leastConnState
}

func (p *leastConnPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	var best *leastConnState
	fewest, ties := int64(math.MaxInt64), uint32(0)
	for _, c := range p.conns {
		switch n := c.inflight.Load(); {
		case n < fewest:
			best, fewest, ties = c, n, 1
		case n == fewest:
			ties++
			if rand.Uint32N(ties) == 0 {
				best = c
			}
		}
	}
	best.inflight.Add(1)
	return balancer.PickResult{SubConn: best.sc, Done: best.done}, nil
}
