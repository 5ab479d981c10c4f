package node

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/benchutil"
	"github.com/zrpcio/zrpc/internal/testlog"
)

// benchNode starts a one-node agent with production timers and fsync on.
func benchNode(b *testing.B) *Node {
	cfg := testConfig(b)
	cfg.RaftHeartbeatTimeout, cfg.RaftElectionTimeout, cfg.RaftLeaderLease = 400*time.Millisecond, 400*time.Millisecond, 400*time.Millisecond
	cfg.MaxInstancesPerService = 0 // the load registers more than the default limit of one service
	opts := []Option{WithLogger(testlog.Discard())}
	if os.Getenv("ZRPC_BENCH_NOSYNC") != "" {
		opts = append(opts, WithRaftNoSync())
	}
	return startNode(b, cfg, opts...)
}

// BenchmarkRegister measures registrations/s through the gRPC API, each
// acknowledged only after it is committed (fsync) and applied, at 1, 16
// and 64 concurrent clients, each with its own connection.
func BenchmarkRegister(b *testing.B) {
	for _, clients := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			n := benchNode(b)
			regs := make([]pb.RegistryClient, clients)
			for i := range regs {
				_, regs[i] = dial(b, n.GRPCAddr())
			}
			var lat benchutil.Latencies
			benchutil.RegisterLoad(b, regs, &lat)
			lat.Report(b, "ms", 0.50, 0.99)
		})
	}
}

// BenchmarkWatchLatency measures the time from a Register call's start to
// its event reaching a watcher on the same agent (one write in flight).
func BenchmarkWatchLatency(b *testing.B) {
	n := benchNode(b)
	_, c := dial(b, n.GRPCAddr())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.Watch(ctx, &pb.WatchRequest{Service: "bench.rpc"})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // the initial snapshot
		b.Fatal(err)
	}
	var lat benchutil.Latencies
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := c.Register(ctx, &pb.RegisterRequest{Instance: benchutil.Instance(int64(i))}); err != nil {
			b.Fatal(err)
		}
		for seen := false; !seen; {
			resp, err := stream.Recv()
			if err != nil {
				b.Fatal(err)
			}
			for _, e := range resp.Events {
				seen = seen || e.Instance.Id == benchutil.Instance(int64(i)).Id
			}
		}
		lat.Add(time.Since(start))
	}
	b.StopTimer()
	lat.Report(b, "ms", 0.50, 0.99)
}
