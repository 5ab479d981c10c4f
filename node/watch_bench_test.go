package node

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/benchutil"
)

// BenchmarkWatchFanout measures write→event latency on one agent with
// many watchers: services × watchers Watch streams (spread over 16
// connections), or as many watches on one WatchMany stream per connection
// (read by one goroutine per stream, as events arrive), and b.N
// registrations at 200 writes/s, each to the next
// service in turn. Every watcher of the service written records the time
// from the write's start to the event's arrival; p50 and p99 are over all
// of them. mem-KiB/watcher is the process's heap and stacks per watcher
// once every stream is open (client and agent together, as both run in
// this process).
func BenchmarkWatchFanout(b *testing.B) {
	for _, tc := range []struct{ services, watchers int }{{1000, 10}, {1, 10000}} {
		for _, many := range []bool{false, true} {
			name := fmt.Sprintf("services=%d/watchers=%d/stream=Watch", tc.services, tc.watchers)
			if many {
				name = fmt.Sprintf("services=%d/watchers=%d/stream=WatchMany", tc.services, tc.watchers)
			}
			b.Run(name, func(b *testing.B) {
				benchWatchFanout(b, tc.services, tc.watchers, 200, many)
			})
		}
	}
}

func benchWatchFanout(b *testing.B, services, watchers, rate int, many bool) {
	n := benchNode(b)
	conns := make([]*grpc.ClientConn, 16)
	for i := range conns {
		conns[i], _ = dial(b, n.GRPCAddr())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	service := func(i int) string { return fmt.Sprintf("fanout-%04d.rpc", i%services) }

	var starts sync.Map // instance id -> time.Time of its write's start
	var lat benchutil.Latencies
	var received atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	record := func(resp *pb.WatchResponse) {
		now := time.Now()
		for _, e := range resp.Events {
			if start, ok := starts.Load(e.Instance.Id); ok {
				lat.Add(now.Sub(start.(time.Time)))
				received.Add(1)
			}
		}
	}
	before := memInUse()
	if many {
		openWatchMany(b, ctx, conns, services*watchers, service, record, &wg)
	}
	for i := range services * watchers {
		if many {
			break
		}
		c := pb.NewRegistryClient(conns[i%len(conns)])
		stream, err := c.Watch(ctx, &pb.WatchRequest{Service: service(i)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil { // the initial snapshot
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				resp, err := stream.Recv()
				if err != nil {
					return
				}
				record(resp)
			}
		}()
	}

	perWatcher := float64(memInUse()-before) / float64(services*watchers) / 1024
	_, writer := dial(b, n.GRPCAddr())
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	inflight := make(chan struct{}, 64)
	errs := make(chan error, 1)
	b.ResetTimer()
	for i := range b.N {
		<-tick.C
		in := benchutil.Instance(int64(i))
		in.Service, in.Id = service(i), fmt.Sprintf("w-%d", i)
		inflight <- struct{}{}
		starts.Store(in.Id, time.Now())
		go func() {
			defer func() { <-inflight }()
			if _, err := writer.Register(ctx, &pb.RegisterRequest{Instance: in}); err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		}()
	}
	want := int64(b.N * watchers)
	deadline := time.Now().Add(time.Minute)
	for received.Load() < want && time.Now().Before(deadline) {
		select {
		case err := <-errs:
			b.Fatal(err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	b.StopTimer()
	if got := received.Load(); got < want {
		b.Fatalf("watchers received %d of %d events within a minute", got, want)
	}
	lat.Report(b, "ms", 0.50, 0.99)
	b.ReportMetric(perWatcher, "mem-KiB/watcher")
}

// memInUse is the heap and stack memory in use after a collection.
func memInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}

// openWatchMany opens n watches (watch i of service(i)) on one WatchMany
// stream per connection, waits for their snapshots, and hands every later
// response to record on the stream's goroutine.
func openWatchMany(b *testing.B, ctx context.Context, conns []*grpc.ClientConn, n int, service func(int) string,
	record func(*pb.WatchResponse), wg *sync.WaitGroup) {
	for k, cc := range conns {
		stream, err := pb.NewRegistryClient(cc).WatchMany(ctx)
		if err != nil {
			b.Fatal(err)
		}
		opened := 0
		for i := k; i < n; i += len(conns) {
			req := &pb.WatchManyRequest{Kind: &pb.WatchManyRequest_Create{Create: &pb.WatchCreate{
				WatchId: uint64(i + 1), Watch: &pb.WatchRequest{Service: service(i)}}}}
			if err := stream.Send(req); err != nil {
				b.Fatal(err)
			}
			opened++
		}
		for range opened { // the snapshots
			r, err := stream.Recv()
			if err != nil || r.Ended != nil {
				b.Fatalf("watch snapshot: %v %v", r.GetEnded(), err)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				r, err := stream.Recv()
				if err != nil {
					return
				}
				record(r.Response)
			}
		}()
	}
}
