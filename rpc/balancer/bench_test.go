package balancer

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/metadata"

	"github.com/zrpcio/zrpc/internal/grpctest"
)

// keyedContexts returns n contexts with distinct hash keys.
func keyedContexts(n int) []context.Context {
	ctxs := make([]context.Context, n)
	for i := range ctxs {
		ctxs[i] = WithHashKey(context.Background(), "user-"+strconv.Itoa(i))
	}
	return ctxs
}

func BenchmarkPick(b *testing.B) {
	scs := newSubConns(8)
	ctxs := keyedContexts(64)
	for name, pb := range pickerBuilders() {
		b.Run(name, func(b *testing.B) {
			p := pb.Build(buildInfo(scs, 1, 2, 3, 4, 5, 6, 7, 8))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					res, err := p.Pick(balancer.PickInfo{Ctx: ctxs[i%len(ctxs)]})
					if err != nil {
						b.Fatal(err)
					}
					if res.Done != nil {
						res.Done(balancer.DoneInfo{})
					}
					i++
				}
			})
		})
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items")
	}
	scs := newSubConns(8)
	info := balancer.PickInfo{Ctx: WithHashKey(context.Background(), "user-1")}
	for name, pb := range pickerBuilders() {
		t.Run(name, func(t *testing.T) {
			p := pb.Build(buildInfo(scs, 1, 2, 3, 4, 5, 6, 7, 8))
			allocs := testing.AllocsPerRun(1000, func() {
				res, _ := p.Pick(info)
				if res.Done != nil {
					res.Done(balancer.DoneInfo{})
				}
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per pick, want 0", allocs)
			}
		})
	}
}

func BenchmarkPickHashKeyFromMetadata(b *testing.B) {
	p := consistentHashPickerBuilder{}.Build(buildInfo(newSubConns(8)))
	ctx := metadata.AppendToOutgoingContext(context.Background(), HashKeyMetadataKey, "user-1")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.Pick(balancer.PickInfo{Ctx: ctx}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkP2CSpreadSequential measures how p2c_ewma spreads sequential
// calls over three identical loopback servers: each iteration starts fresh
// servers and a fresh connection, makes 600 health checks 1 ms apart, and
// notes the share of the server that got the fewest. It reports the lowest
// and the median of those shares (an even spread is 33%):
//
//	go test -run '^$' -bench P2CSpreadSequential -benchtime 10x ./rpc/balancer/
func BenchmarkP2CSpreadSequential(b *testing.B) {
	ctx := context.Background()
	var shares []float64
	for range b.N {
		servers := grpctest.StartHealthServers(b, 3)
		cc, _ := dial(b, P2CEWMA, addresses(servers, 0, 0, 0))
		warmUp(b, ctx, cc, servers)
		got := make([]int64, len(servers))
		for range 600 {
			for i, n := range callN(b, ctx, cc, servers, 1) {
				got[i] += n
			}
			time.Sleep(time.Millisecond)
		}
		shares = append(shares, 100*float64(slices.Min(got))/600)
		cc.Close()
	}
	slices.Sort(shares)
	b.ReportMetric(shares[0], "lowest-share-%")
	b.ReportMetric(shares[len(shares)/2], "median-lowest-share-%")
}
