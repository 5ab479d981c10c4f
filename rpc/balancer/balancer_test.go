package balancer

import (
	"errors"
	"testing"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/resolver"
)

func TestRegistered(t *testing.T) {
	for name := range pickerBuilders() {
		b := balancer.Get(name)
		if b == nil {
			t.Errorf("balancer %q not registered", name)
			continue
		}
		if b.Name() != name {
			t.Errorf("balancer.Get(%q).Name() = %q", name, b.Name())
		}
	}
}

func TestNoReadySubConn(t *testing.T) {
	for name, pb := range pickerBuilders() {
		t.Run(name, func(t *testing.T) {
			p := pb.Build(base.PickerBuildInfo{ReadySCs: map[balancer.SubConn]base.SubConnInfo{}})
			if _, err := p.Pick(balancer.PickInfo{}); !errors.Is(err, balancer.ErrNoSubConnAvailable) {
				t.Fatalf("Pick with nothing ready: err = %v, want ErrNoSubConnAvailable", err)
			}
		})
	}
}

func TestOneReadySubConn(t *testing.T) {
	scs := newSubConns(1)
	for name, pb := range pickerBuilders() {
		t.Run(name, func(t *testing.T) {
			counts := countPicks(t, pb.Build(buildInfo(scs)), 10)
			if counts[scs[0]] != 10 {
				t.Fatalf("counts = %v, want all 10 on the only SubConn", counts)
			}
		})
	}
}

func TestAttributes(t *testing.T) {
	tags := []string{"a", "b"}
	a := Attributes{Weight: 7, Zone: "z1", Version: "v2", Tags: tags, Metadata: map[string]string{"k": "v"}}
	addr := WithAttributes(resolver.Address{Addr: "10.0.0.1:1"}, a)
	tags[0] = "changed" // WithAttributes copied them
	got := AttributesOf(addr)
	if got.Weight != 7 || got.Zone != "z1" || got.Version != "v2" || got.Tags[0] != "a" || got.Metadata["k"] != "v" {
		t.Fatalf("AttributesOf = %+v", got)
	}
	if w := AttributesOf(resolver.Address{Addr: "x"}).Weight; w != DefaultWeight {
		t.Fatalf("weight without attributes = %d, want %d", w, DefaultWeight)
	}
	if w := AttributesOf(WithAttributes(resolver.Address{}, Attributes{Zone: "z"})).Weight; w != DefaultWeight {
		t.Fatalf("weight 0 = %d, want %d", w, DefaultWeight)
	}
	same := WithAttributes(resolver.Address{Addr: "10.0.0.1:1"}, Attributes{Weight: 7, Zone: "z1", Version: "v2", Tags: []string{"a", "b"}, Metadata: map[string]string{"k": "v"}})
	if !addr.Equal(same) {
		t.Fatal("addresses with equal attributes are not Equal")
	}
	other := WithAttributes(resolver.Address{Addr: "10.0.0.1:1"}, Attributes{Weight: 7, Zone: "z1", Version: "v2", Tags: []string{"a"}})
	if addr.Equal(other) {
		t.Fatal("addresses with different tags are Equal")
	}
}

func TestTrackerUsesLatestAttributes(t *testing.T) {
	scs := newSubConns(2)
	tr := &attributesTracker{next: wrrPickerBuilder{}}
	// The base balancer still holds the first addresses (weight 1 each);
	// the resolver has since given the first SubConn weight 3.
	info := buildInfo(scs, 1, 1)
	tr.latest = map[string]resolver.Address{
		scs[0].addr: WithAttributes(resolver.Address{Addr: scs[0].addr}, Attributes{Weight: 3}),
	}
	counts := countPicks(t, tr.Build(info), 400)
	if counts[scs[0]] != 300 || counts[scs[1]] != 100 {
		t.Fatalf("counts = %v, want 300 and 100", counts)
	}
}
