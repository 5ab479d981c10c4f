package balancer

import (
	"math/rand/v2"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
)

// roundRobinPickerBuilder builds [RoundRobin] pickers.
type roundRobinPickerBuilder struct{}

func (roundRobinPickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	eps := readyEndpoints(info)
	if len(eps) == 0 {
		return errPickerNoSubConn
	}
	p := &roundRobinPicker{scs: subConns(eps)}
	// A random start keeps many clients, or a rebuilt picker, from all
	// sending their next call to the first instance.
	p.next.Store(rand.Uint32())
	return p
}

// roundRobinPicker hands out its SubConns in turn with one atomic add a pick.
type roundRobinPicker struct {
	scs  []balancer.SubConn
	next atomic.Uint32
}

func (p *roundRobinPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	i := p.next.Add(1) - 1
	return balancer.PickResult{SubConn: p.scs[i%uint32(len(p.scs))]}, nil
}
