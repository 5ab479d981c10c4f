package balancer

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/resolver"
)

// fakeSubConn stands in for a grpc SubConn; pickers only hand it back.
type fakeSubConn struct {
	balancer.SubConn
	addr string
}

func (f *fakeSubConn) String() string { return f.addr }

// newSubConns returns n fake SubConns with addresses 10.0.0.1:9000 and on.
func newSubConns(n int) []*fakeSubConn {
	scs := make([]*fakeSubConn, n)
	for i := range scs {
		scs[i] = &fakeSubConn{addr: fmt.Sprintf("10.0.0.%d:9000", i+1)}
	}
	return scs
}

// buildInfo returns the build info for scs, all ready, with the given
// weights (missing ones are 0, so DefaultWeight).
func buildInfo(scs []*fakeSubConn, weights ...uint32) base.PickerBuildInfo {
	info := base.PickerBuildInfo{ReadySCs: make(map[balancer.SubConn]base.SubConnInfo, len(scs))}
	for i, sc := range scs {
		var a Attributes
		if i < len(weights) {
			a.Weight = weights[i]
		}
		info.ReadySCs[sc] = base.SubConnInfo{Address: WithAttributes(resolver.Address{Addr: sc.addr}, a)}
	}
	return info
}

// pick picks once for a unary call and fails the test on error.
func pick(t testing.TB, p balancer.Picker, ctx context.Context) balancer.PickResult {
	t.Helper()
	return pickMethod(t, p, ctx, "/svc/Method")
}

// pickMethod picks once for a call of method and fails the test on error.
func pickMethod(t testing.TB, p balancer.Picker, ctx context.Context, method string) balancer.PickResult {
	t.Helper()
	if ctx == nil {
		ctx = context.Background()
	}
	res, err := p.Pick(balancer.PickInfo{FullMethodName: method, Ctx: ctx})
	if err != nil {
		t.Fatalf("Pick: %v", err)
	}
	return res
}

// countPicks picks n times, finishing every call at once, and counts the
// picks per SubConn.
func countPicks(t testing.TB, p balancer.Picker, n int) map[balancer.SubConn]int {
	t.Helper()
	counts := make(map[balancer.SubConn]int)
	for range n {
		res := pick(t, p, nil)
		counts[res.SubConn]++
		if res.Done != nil {
			res.Done(balancer.DoneInfo{})
		}
	}
	return counts
}

// pickerBuilders returns a fresh picker builder of each balancer.
func pickerBuilders() map[string]base.PickerBuilder {
	return map[string]base.PickerBuilder{
		P2CEWMA:            newP2CPickerBuilder(),
		RoundRobin:         roundRobinPickerBuilder{},
		WeightedRoundRobin: wrrPickerBuilder{},
		LeastConn:          newLeastConnPickerBuilder(),
		Random:             randomPickerBuilder{},
		ConsistentHash:     consistentHashPickerBuilder{},
	}
}
