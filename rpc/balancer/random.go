package balancer

import (
	"math/rand/v2"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
)

// randomPickerBuilder builds [Random] pickers.
type randomPickerBuilder struct{}

func (randomPickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	eps := readyEndpoints(info)
	if len(eps) == 0 {
		return errPickerNoSubConn
	}
	return &randomPicker{scs: subConns(eps), intN: rand.IntN}
}

// randomPicker picks uniformly at random.
type randomPicker struct {
	scs []balancer.SubConn
	// intN returns a number in [0, n); math/rand/v2's lock-free global
	// source, or a seeded one in tests.
	intN func(n int) int
}

func (p *randomPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{SubConn: p.scs[p.intN(len(p.scs))]}, nil
}
