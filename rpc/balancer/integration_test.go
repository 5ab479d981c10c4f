package balancer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/zrpcio/zrpc/internal/grpctest"
)

// addresses returns the servers' addresses with the given weights.
func addresses(servers []*grpctest.Server, weights ...uint32) []resolver.Address {
	addrs := make([]resolver.Address, len(servers))
	for i, s := range servers {
		addrs[i] = WithAttributes(resolver.Address{Addr: s.Addr}, Attributes{Weight: weights[i]})
	}
	return addrs
}

// dial connects to servers through a manual resolver using balancer name.
func dial(t testing.TB, name string, addrs []resolver.Address) (*grpc.ClientConn, *manual.Resolver) {
	t.Helper()
	r := manual.NewBuilderWithScheme("zrpctest")
	r.InitialState(resolver.State{Addresses: addrs})
	cc, err := grpc.NewClient(r.Scheme()+":///svc",
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, name)),
	)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc, r
}

// callN makes n health checks on cc with ctx and returns the calls each
// server answered.
func callN(t testing.TB, ctx context.Context, cc *grpc.ClientConn, servers []*grpctest.Server, n int) []int64 {
	t.Helper()
	before := make([]int64, len(servers))
	for i, s := range servers {
		before[i] = s.Calls.Load()
	}
	client := healthpb.NewHealthClient(cc)
	for range n {
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("Check: %v", err)
		}
	}
	got := make([]int64, len(servers))
	for i, s := range servers {
		got[i] = s.Calls.Load() - before[i]
	}
	return got
}

// warmUp calls until every server has answered, so that all SubConns are
// ready and the picker is built over all of them.
func warmUp(t testing.TB, ctx context.Context, cc *grpc.ClientConn, servers []*grpctest.Server) {
	t.Helper()
	for {
		all := true
		for _, s := range servers {
			all = all && s.Calls.Load() > 0
		}
		if all {
			return
		}
		if ctx.Err() != nil {
			t.Fatal("not every server answered before the deadline")
		}
		callN(t, ctx, cc, servers, 1)
	}
}

func TestIntegrationWeightedRoundRobin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	servers := grpctest.StartHealthServers(t, 3)
	cc, r := dial(t, WeightedRoundRobin, addresses(servers, 30, 10, 1))
	warmUp(t, ctx, cc, servers)

	// Whole periods of the schedule (41 picks) give exact counts.
	if got := callN(t, ctx, cc, servers, 10*41); got[0] != 300 || got[1] != 100 || got[2] != 10 {
		t.Fatalf("calls per server with weights 30:10:1 = %v, want [300 100 10]", got)
	}

	// New weights for the same addresses reach the picker.
	r.UpdateState(resolver.State{Addresses: addresses(servers, 1, 1, 1)})
	for {
		got := callN(t, ctx, cc, servers, 30)
		if got[0] == 10 && got[1] == 10 && got[2] == 10 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("weights 1:1:1 never took effect; last 30 calls: %v", got)
		}
	}
}

func TestIntegrationRoundRobin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	servers := grpctest.StartHealthServers(t, 3)
	cc, _ := dial(t, RoundRobin, addresses(servers, 0, 0, 0))
	warmUp(t, ctx, cc, servers)
	got := callN(t, ctx, cc, servers, 300)
	for i, n := range got {
		if n < 90 || n > 110 {
			t.Fatalf("server %d answered %d of 300 calls, want 90..110: %v", i, n, got)
		}
	}
}

func TestIntegrationAllBalancers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for name := range pickerBuilders() {
		t.Run(name, func(t *testing.T) {
			servers := grpctest.StartHealthServers(t, 3)
			cc, _ := dial(t, name, addresses(servers, 0, 0, 0))
			warmUp(t, ctx, cc, servers)
			if got := callN(t, ctx, cc, servers, 90); got[0]+got[1]+got[2] != 90 {
				t.Fatalf("calls answered %v, want 90 in all", got)
			}
			// Calls with one hash key all go to one server.
			keyed := WithHashKey(ctx, "user-1")
			got := callN(t, keyed, cc, servers, 30)
			if name == ConsistentHash && got[0] != 30 && got[1] != 30 && got[2] != 30 {
				t.Fatalf("calls with one hash key went to %v, want one server", got)
			}
		})
	}
}
