package rpc_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/rpc"
	"github.com/zrpcio/zrpc/rpc/clientchain"
)

// BenchmarkHedgeTail measures the latency tail of 100-byte echo calls over
// three loopback servers, one of which adds 50 ms to 1% of its calls, with
// hedging off and on (after the method's p95, at least 5 ms). Four callers
// share one zrpc connection (p2c_ewma, default chain). It reports p50, p99,
// p99.9 and the largest call time. Off and on alternate, three rounds of
// each (-count would run all of one before the other); give a fixed number
// of calls:
//
//	go test -run '^$' -bench HedgeTail -benchtime 20000x ./rpc/
func BenchmarkHedgeTail(b *testing.B) {
	addrs := make([]string, 3)
	for i := range addrs {
		slow := i == 2
		addrs[i] = grpctest.Serve(b, func(s *grpc.Server) {
			grpctest.RegisterEcho(s, func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
				if slow && rand.Float64() < 0.01 {
					select {
					case <-time.After(50 * time.Millisecond):
					case <-ctx.Done():
						return nil, ctx.Err()
					}
				}
				return in, nil
			})
		})
	}
	target := fmt.Sprintf("direct:///%s,%s,%s", addrs[0], addrs[1], addrs[2])
	for round := 1; round <= 3; round++ {
		for _, hedge := range []bool{false, true} {
			b.Run(fmt.Sprintf("round=%d/hedge=%v", round, hedge), func(b *testing.B) { benchHedgeTail(b, target, hedge) })
		}
	}
}

func benchHedgeTail(b *testing.B, target string, hedge bool) {
	opts := []rpc.DialOption{rpc.WithWaitReady(), rpc.WithIdempotent(grpctest.EchoMethod)}
	if hedge {
		opts = append(opts, rpc.WithHedging(clientchain.HedgeConfig{Idempotent: true}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	conn, err := rpc.Dial(ctx, target, opts...)
	cancel()
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	payload := &wrapperspb.BytesValue{Value: make([]byte, 100)}
	for range 500 { // connect and learn the method's latency
		if err := conn.Invoke(context.Background(), grpctest.EchoMethod, payload, new(wrapperspb.BytesValue)); err != nil {
			b.Fatal(err)
		}
	}
	lat := runTimed(b, conn, payload, 4)
	slices.Sort(lat)
	at := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(at(0.5), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
	b.ReportMetric(at(0.999), "p99.9-ms")
	b.ReportMetric(at(1), "max-ms")
	i, _ := slices.BinarySearch(lat, 45*time.Millisecond)
	b.ReportMetric(float64(len(lat)-i)*10000/float64(len(lat)), "over45ms/10k")
}

// runTimed makes b.N calls from callers goroutines and returns each call's
// duration.
func runTimed(b *testing.B, conn *grpc.ClientConn, payload *wrapperspb.BytesValue, callers int) []time.Duration {
	var next atomic.Int64
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	b.ResetTimer()
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := new(wrapperspb.BytesValue)
			var mine []time.Duration
			for next.Add(1) <= int64(b.N) {
				start := time.Now()
				if err := conn.Invoke(context.Background(), grpctest.EchoMethod, payload, out); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	b.StopTimer()
	if len(all) == 0 {
		b.Fatal("no call succeeded")
	}
	return all
}
