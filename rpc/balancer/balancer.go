package balancer

//lint:file-ignore SA1019 the base balancer sees only resolver.Address, so
// BalancerAttributes (deprecated only for addresses inside an Endpoint) is
// where the resolver's per-instance attributes reach it.

import (
	"cmp"
	"slices"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/resolver"
)

// Names of the balancers, as used in a service config's loadBalancingConfig.
const (
	P2CEWMA            = "zrpc_p2c_ewma"
	RoundRobin         = "zrpc_round_robin"
	WeightedRoundRobin = "zrpc_weighted_round_robin"
	LeastConn          = "zrpc_least_conn"
	Random             = "zrpc_random"
	ConsistentHash     = "zrpc_consistent_hash"
)

func init() {
	for _, b := range []builder{
		{name: P2CEWMA, newPickerBuilder: func() base.PickerBuilder { return newP2CPickerBuilder() }},
		{name: RoundRobin, newPickerBuilder: func() base.PickerBuilder { return roundRobinPickerBuilder{} }},
		{name: WeightedRoundRobin, newPickerBuilder: func() base.PickerBuilder { return wrrPickerBuilder{} }},
		{name: LeastConn, newPickerBuilder: func() base.PickerBuilder { return newLeastConnPickerBuilder() }},
		{name: Random, newPickerBuilder: func() base.PickerBuilder { return randomPickerBuilder{} }},
		{name: ConsistentHash, newPickerBuilder: func() base.PickerBuilder { return consistentHashPickerBuilder{} }},
	} {
		balancer.Register(b)
	}
}

// builder builds one base balancer per ClientConn, each with its own picker
// builder, so that per-SubConn state (in-flight counts, latency) is never
// shared between ClientConns.
type builder struct {
	name             string
	newPickerBuilder func() base.PickerBuilder
}

func (b builder) Name() string { return b.name }

func (b builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	t := &attributesTracker{next: b.newPickerBuilder()}
	inner := base.NewBalancerBuilder(b.name, t, base.Config{HealthCheck: true}).Build(cc, opts)
	return &trackingBalancer{Balancer: inner, tracker: t}
}

// trackingBalancer records the latest attributes of every address before
// passing the resolver state to the base balancer. The base balancer keys
// SubConns by address and keeps the resolver.Address it first saw, so without
// this a changed weight would not reach the pickers until the SubConn was
// recreated.
type trackingBalancer struct {
	balancer.Balancer
	tracker *attributesTracker
}

func (b *trackingBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	latest := make(map[string]resolver.Address, len(s.ResolverState.Addresses))
	for _, ep := range s.ResolverState.Endpoints {
		for _, a := range ep.Addresses {
			a.BalancerAttributes = ep.Attributes
			latest[a.Addr] = a
		}
	}
	for _, a := range s.ResolverState.Addresses {
		latest[a.Addr] = a
	}
	b.tracker.latest = latest
	return b.Balancer.UpdateClientConnState(s)
}

// attributesTracker is the base.PickerBuilder handed to the base balancer:
// it refreshes each ready SubConn's address with the latest attributes and
// delegates. grpc calls UpdateClientConnState and Build from the balancer's
// serializer, one at a time, so latest needs no lock.
type attributesTracker struct {
	latest map[string]resolver.Address
	next   base.PickerBuilder
}

func (t *attributesTracker) Build(info base.PickerBuildInfo) balancer.Picker {
	ready := make(map[balancer.SubConn]base.SubConnInfo, len(info.ReadySCs))
	for sc, sci := range info.ReadySCs {
		if a, ok := t.latest[sci.Address.Addr]; ok {
			sci.Address.BalancerAttributes = a.BalancerAttributes
		}
		ready[sc] = sci
	}
	return t.next.Build(base.PickerBuildInfo{ReadySCs: ready})
}

// endpoint is one ready SubConn with its address and attributes.
type endpoint struct {
	sc    balancer.SubConn
	addr  string
	attrs Attributes
}

// readyEndpoints returns the ready SubConns of info sorted by address, so that
// pickers built from the same set behave the same whatever the map order.
func readyEndpoints(info base.PickerBuildInfo) []endpoint {
	eps := make([]endpoint, 0, len(info.ReadySCs))
	for sc, sci := range info.ReadySCs {
		eps = append(eps, endpoint{sc: sc, addr: sci.Address.Addr, attrs: AttributesOf(sci.Address)})
	}
	slices.SortFunc(eps, func(a, b endpoint) int { return cmp.Compare(a.addr, b.addr) })
	return eps
}

// subConns returns the SubConns of eps in order.
func subConns(eps []endpoint) []balancer.SubConn {
	scs := make([]balancer.SubConn, len(eps))
	for i, ep := range eps {
		scs[i] = ep.sc
	}
	return scs
}

// errPickerNoSubConn is returned by every picker builder when nothing is
// ready; grpc then blocks the call until a new picker arrives.
var errPickerNoSubConn = base.NewErrPicker(balancer.ErrNoSubConnAvailable)
