package balancer

//lint:file-ignore SA1019 the base balancer sees only resolver.Address, so
// BalancerAttributes (deprecated only for addresses inside an Endpoint) is
// where the resolver's per-instance attributes reach it.

import (
	"maps"
	"slices"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"
)

// DefaultWeight is the weight of an endpoint whose Attributes.Weight is 0.
const DefaultWeight = 100

// Attributes describe one service instance to the balancers. The resolver sets
// them on each resolver.Address with [WithAttributes].
type Attributes struct {
	// Weight is the instance's share of calls relative to the others under
	// [WeightedRoundRobin]; 0 means [DefaultWeight].
	Weight uint32
	// Zone and Version are the instance's placement and release.
	Zone, Version string
	// Tags and Metadata are free-form labels copied from the registration.
	Tags     []string
	Metadata map[string]string
}

// attributesKey is the key of Attributes in resolver.Address.BalancerAttributes.
type attributesKey struct{}

// attributesValue wraps Attributes so that grpc can compare two of them
// (attributes.Attributes.Equal needs an Equal method for values holding
// slices or maps).
type attributesValue struct{ a Attributes }

// Equal reports whether o holds the same Attributes.
func (v attributesValue) Equal(o any) bool {
	ov, ok := o.(attributesValue)
	if !ok {
		return false
	}
	a, b := v.a, ov.a
	return a.Weight == b.Weight && a.Zone == b.Zone && a.Version == b.Version &&
		slices.Equal(a.Tags, b.Tags) && maps.Equal(a.Metadata, b.Metadata)
}

// WithAttributes returns addr with a set in its BalancerAttributes. Tags and
// Metadata are copied, so the caller may reuse them.
func WithAttributes(addr resolver.Address, a Attributes) resolver.Address {
	a.Tags = slices.Clone(a.Tags)
	a.Metadata = maps.Clone(a.Metadata)
	v := attributesValue{a: a}
	if addr.BalancerAttributes == nil {
		addr.BalancerAttributes = attributes.New(attributesKey{}, v)
	} else {
		addr.BalancerAttributes = addr.BalancerAttributes.WithValue(attributesKey{}, v)
	}
	return addr
}

// AttributesOf returns the Attributes set on addr by [WithAttributes], or the
// zero Attributes. A Weight of 0 is returned as [DefaultWeight]. Tags and
// Metadata are shared with addr and must not be modified.
func AttributesOf(addr resolver.Address) Attributes {
	v, _ := addr.BalancerAttributes.Value(attributesKey{}).(attributesValue)
	a := v.a
	if a.Weight == 0 {
		a.Weight = DefaultWeight
	}
	return a
}
