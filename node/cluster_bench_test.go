package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/benchutil"
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
	// The load registers more instances of one service than its default
	// limit (benchutil.Instance: one service, a new id per registration).
	cfg.MaxInstancesPerService = 0
}

// BenchmarkClusterRegister: registrations/s on a 3-agent cluster, clients
// spread over all agents (followers forward to the leader).
func BenchmarkClusterRegister(b *testing.B) {
	for _, clients := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			c := testcluster.New(b, 3, testcluster.WithConfig(lanTimers))
			regs := make([]pb.RegistryClient, clients)
			for w := range regs {
				regs[w] = c.Registry(w % 3)
			}
			benchutil.RegisterLoad(b, regs, nil)
		})
	}
}

// BenchmarkFailover: kill the leader (no goodbye) under a writer sending one
// registration every 10 ms to a surviving agent; measure the time from the
// kill to the first successful write. Each iteration is one kill.
func BenchmarkFailover(b *testing.B) {
	var samples benchutil.Latencies
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
			_, err := via.Register(ctx, &pb.RegisterRequest{Instance: benchutil.Instance(n)})
			cancel()
			if err == nil {
				break
			}
			if time.Since(killed) > 30*time.Second {
				b.Fatalf("no write succeeded 30s after the leader kill: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		samples.Add(time.Since(killed))
	}
	samples.Report(b, "kill-to-write-ms", 0.5, 1)
}

// BenchmarkDeadAgentDetection: kill an agent (no goodbye) that owns an
// instance; measure the time until a watcher on another agent sees the
// instance leave the routable (passing) set.
func BenchmarkDeadAgentDetection(b *testing.B) {
	var samples benchutil.Latencies
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c := testcluster.New(b, 3, testcluster.WithConfig(lanTimers))
		victim := (c.LeaderIndex() + 1) % 3
		watcher := (victim + 1) % 3
		if _, err := c.Registry(victim).Register(context.Background(), &pb.RegisterRequest{Instance: benchutil.Instance(1)}); err != nil {
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
		samples.Add(time.Since(killed))
		cancel()
	}
	samples.Report(b, "kill-to-unroutable-ms", 0.5, 1)
}
