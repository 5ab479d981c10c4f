package node_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// lanTimers gives testcluster agents the production (lan) gossip and Raft
// timers, so failover numbers mean what an operator will see.
func lanTimers(cfg *node.Config) {
	d := node.Default()
	cfg.GossipProfile = "lan"
	cfg.RaftHeartbeatTimeout, cfg.RaftElectionTimeout, cfg.RaftLeaderLease = d.RaftHeartbeatTimeout, d.RaftElectionTimeout, d.RaftLeaderLease
	cfg.HealthInterval = d.HealthInterval
}

func benchInstance(i int64) *pb.Instance {
	return &pb.Instance{
		Service: "bench.rpc", Id: fmt.Sprintf("instance-%08d", i), Address: "10.1.2.3:9001",
		Zone: "zone-a", Version: "v1.2.3", Tags: []string{"primary", "canary"},
		Metadata: map[string]string{"region": "eu-west", "build": "2026-11-25T10:00:00Z", "owner": "team-users"},
	}
}

// BenchmarkClusterRegister: registrations/s on a 3-agent cluster, clients
// spread over all agents (followers forward to the leader).
func BenchmarkClusterRegister(b *testing.B) {
	for _, clients := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			c := testcluster.New(b, 3, testcluster.WithConfig(lanTimers))
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := 0; w < clients; w++ {
				wg.Add(1)
				go func(reg pb.RegistryClient) {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						if _, err := reg.Register(context.Background(), &pb.RegisterRequest{Instance: benchInstance(i)}); err != nil {
							b.Error(err)
							return
						}
					}
				}(c.Registry(w % 3))
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "regs/s")
		})
	}
}

// BenchmarkFailover: kill the leader (no goodbye) under a writer sending one
// registration every 10 ms to a surviving agent; measure the time from the
// kill to the first successful write. Each iteration is one kill.
func BenchmarkFailover(b *testing.B) {
	var samples []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c := testcluster.New(b, 3, testcluster.WithConfig(lanTimers))
		leader := c.LeaderIndex()
		via := c.Registry((leader + 1) % 3)
		b.StartTimer()
		killed := time.Now()
		c.Kill(leader)
		for n := int64(0); ; n++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := via.Register(ctx, &pb.RegisterRequest{Instance: benchInstance(n)})
			cancel()
			if err == nil {
				break
			}
			if time.Since(killed) > 30*time.Second {
				b.Fatalf("no write succeeded 30s after the leader kill: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		samples = append(samples, time.Since(killed))
	}
	reportMedian(b, samples, "kill-to-write-ms")
}

// BenchmarkDeadAgentDetection: kill an agent (no goodbye) that owns an
// instance; measure the time until a watcher on another agent sees the
// instance leave the routable (passing) set.
func BenchmarkDeadAgentDetection(b *testing.B) {
	var samples []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c := testcluster.New(b, 3, testcluster.WithConfig(lanTimers))
		victim := (c.LeaderIndex() + 1) % 3
		watcher := (victim + 1) % 3
		if _, err := c.Registry(victim).Register(context.Background(), &pb.RegisterRequest{Instance: benchInstance(1)}); err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := c.Registry(watcher).Watch(ctx, &pb.WatchRequest{Service: "bench.rpc"})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		killed := time.Now()
		c.Kill(victim)
	wait:
		for {
			resp, err := stream.Recv()
			if err != nil {
				b.Fatal(err)
			}
			for _, e := range resp.Events {
				if e.Type == pb.Event_DELETE || e.Instance.Health != pb.Health_PASSING {
					break wait
				}
			}
		}
		samples = append(samples, time.Since(killed))
		cancel()
	}
	reportMedian(b, samples, "kill-to-unroutable-ms")
}

func reportMedian(b *testing.B, d []time.Duration, unit string) {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, unit)
	b.ReportMetric(float64(d[len(d)-1].Microseconds())/1000, "max-"+unit)
}
