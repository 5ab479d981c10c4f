// Package benchutil holds what the registry benchmarks share: a typical
// registration and a latency recorder that reports quantiles.
package benchutil

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// Instance is a registration of about 200 bytes, like a typical one.
func Instance(i int64) *pb.Instance {
	return &pb.Instance{
		Service: "bench.rpc", Id: fmt.Sprintf("instance-%08d", i), Address: "10.1.2.3:9001",
		Zone: "zone-a", Version: "v1.2.3", Tags: []string{"primary", "canary"},
		Metadata: map[string]string{"region": "eu-west", "build": "2026-11-25T10:00:00Z", "owner": "team-users"},
	}
}

// Latencies collects durations from any goroutine.
type Latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

// Add records one duration.
func (l *Latencies) Add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// Report adds the named quantiles, in milliseconds, to b's results; unit
// names the metric ("ms" gives "p50-ms", "p99-ms").
func (l *Latencies) Report(b *testing.B, unit string, quantiles ...float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return
	}
	sort.Slice(l.d, func(i, j int) bool { return l.d[i] < l.d[j] })
	for _, q := range quantiles {
		v := l.d[int(q*float64(len(l.d)-1))]
		b.ReportMetric(float64(v.Microseconds())/1000, fmt.Sprintf("p%g-%s", q*100, unit))
	}
}

// RegisterLoad runs one worker per client, each registering Instance(i)
// until b.N registrations are done in all, then reports regs/s; lat, when
// not nil, records each call's latency. It resets and stops b's timer.
func RegisterLoad(b *testing.B, clients []pb.RegistryClient, lat *Latencies) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				start := time.Now()
				if _, err := c.Register(context.Background(), &pb.RegisterRequest{Instance: Instance(i)}); err != nil {
					b.Error(err)
					return
				}
				if lat != nil {
					lat.Add(time.Since(start))
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "regs/s")
}
