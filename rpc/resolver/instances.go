package resolver

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/grpc/resolver"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/rpc/balancer"
)

// instanceSet is the resolver's copy of one service's instances, kept up to
// date from watch responses. It is owned by one goroutine.
type instanceSet struct {
	byID map[string]*zrpcpb.Instance
}

func newInstanceSet() *instanceSet {
	return &instanceSet{byID: make(map[string]*zrpcpb.Instance)}
}

// apply applies one watch response: a snapshot replaces the whole set, other
// responses apply their PUT and DELETE events in order.
func (s *instanceSet) apply(resp *zrpcpb.WatchResponse) {
	if resp.GetSnapshot() {
		clear(s.byID)
	}
	for _, ev := range resp.GetEvents() {
		in := ev.GetInstance()
		if in == nil {
			continue
		}
		switch ev.GetType() {
		case zrpcpb.Event_PUT:
			s.byID[in.GetId()] = in
		case zrpcpb.Event_DELETE:
			delete(s.byID, in.GetId())
		}
	}
}

// selection says which instances of a set receive calls.
type selection struct {
	filter     Filter // nil keeps all
	preferZone string // "" has no preference
}

// addresses returns the routable instances as addresses, sorted by instance
// id: those PASSING and kept by the filter and, when some of them are in the
// preferred zone, only those.
func (s *instanceSet) addresses(sel selection) []resolver.Address {
	var routable []*zrpcpb.Instance
	for _, in := range s.byID {
		if in.GetHealth() == zrpcpb.Health_PASSING && (sel.filter == nil || sel.filter(in)) {
			routable = append(routable, in)
		}
	}
	if sel.preferZone != "" {
		inZone := slices.DeleteFunc(slices.Clone(routable), func(in *zrpcpb.Instance) bool {
			return in.GetZone() != sel.preferZone
		})
		if len(inZone) > 0 {
			routable = inZone
		}
	}
	slices.SortFunc(routable, func(a, b *zrpcpb.Instance) int { return strings.Compare(a.GetId(), b.GetId()) })
	addrs := make([]resolver.Address, 0, len(routable))
	for _, in := range routable {
		addrs = append(addrs, instanceAddress(in))
	}
	return addrs
}

// maxUnroutableNamed is the most instances unroutable names.
const maxUnroutableNamed = 3

// unroutable says why none of the set's instances of service is routable:
// there are none, or what the first few (by id) are: their health and its
// check's output, or that the client's filter left them out.
func (s *instanceSet) unroutable(service string, sel selection) string {
	if len(s.byID) == 0 {
		return fmt.Sprintf("the registry has no instance of %s", service)
	}
	ids := slices.Sorted(maps.Keys(s.byID))
	var why []string
	for _, id := range ids[:min(len(ids), maxUnroutableNamed)] {
		in := s.byID[id]
		switch {
		case in.GetHealth() != zrpcpb.Health_PASSING && in.GetHealthOutput() != "":
			why = append(why, fmt.Sprintf("%s %s (%s)", id, healthName(in.GetHealth()), in.GetHealthOutput()))
		case in.GetHealth() != zrpcpb.Health_PASSING:
			why = append(why, fmt.Sprintf("%s %s", id, healthName(in.GetHealth())))
		default:
			why = append(why, id+" left out by this client's filter")
		}
	}
	if more := len(ids) - len(why); more > 0 {
		why = append(why, fmt.Sprintf("%d more", more))
	}
	if len(ids) == 1 {
		return fmt.Sprintf("the one instance of %s is not routable: %s", service, why[0])
	}
	return fmt.Sprintf("none of the %d instances of %s is routable: %s", len(ids), service, strings.Join(why, "; "))
}

// healthName is h as zrpcctl prints it: "critical".
func healthName(h zrpcpb.Health) string { return strings.ToLower(h.String()) }

// instanceAddress is the address of in with its balancer attributes.
func instanceAddress(in *zrpcpb.Instance) resolver.Address {
	return balancer.WithAttributes(resolver.Address{Addr: in.GetAddress()}, balancer.Attributes{
		Weight:   in.GetWeight(),
		Zone:     in.GetZone(),
		Version:  in.GetVersion(),
		Tags:     in.GetTags(),
		Metadata: in.GetMetadata(),
	})
}
