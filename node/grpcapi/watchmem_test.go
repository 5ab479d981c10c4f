package grpcapi

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/fsmtest"
	"github.com/zrpcio/zrpc/raftstore"
)

// watchStreamsMemory opens n Watch streams of n/10 services (each gets
// its snapshot of one instance, then idles) over conns client
// connections to one agent's gRPC server, and returns what they cost the
// process (agent and client together) per stream: bytes allocated while
// they opened, and heap plus goroutine stacks in use after a collection.
func watchStreamsMemory(tb testing.TB, n, conns int) (allocated, inUse float64) {
	fsm := raftstore.NewFSM(1 << 12)
	w := fsmtest.NewWriter(tb, fsm)
	for i := range n / 10 {
		w.Register(&pb.Instance{Service: svcName(i), Id: "i1", Address: "127.0.0.1:9000"})
	}
	reg := NewRegistry(context.Background(), RegistryConfig{Agent: "a1", Replica: fsm, Metrics: &watchMetrics{}})
	addr := serveTest(tb, Services{Registry: reg})
	clients := make([]pb.RegistryClient, conns)
	for i := range clients {
		cc := dialTest(tb, addr)
		clients[i] = pb.NewRegistryClient(cc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	// Warm up: the connections, and the server's stream workers, which
	// run the first streams' handlers and are kept whatever the streams.
	for i := range streamWorkers + conns {
		openWatch(tb, ctx, clients[i%conns], svcName(0))
	}
	before := memNow()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for i := range n {
		openWatch(tb, ctx, clients[i%conns], svcName(i/10))
	}
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	after := memNow()
	return float64(m1.TotalAlloc-m0.TotalAlloc) / float64(n), float64(after-before) / float64(n)
}

func svcName(i int) string { return fmt.Sprintf("svc-%04d.rpc", i) }

// openWatch opens a watch of service and reads its snapshot.
func openWatch(tb testing.TB, ctx context.Context, c pb.RegistryClient, service string) {
	s, err := c.Watch(ctx, &pb.WatchRequest{Service: service})
	if err == nil {
		_, err = s.Recv()
	}
	if err != nil {
		tb.Fatal(err)
	}
}

// memNow is the heap and the goroutine stacks in use after a collection.
func memNow() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// A Watch stream costs a bounded number of bytes: 1,000 streams of 100
// services over 10 connections allocate at most maxAllocPerStream each
// (agent and client together; about 12 KiB when this was written) while
// they open and take their snapshots.
func TestWatchStreamAllocatesABoundedNumberOfBytes(t *testing.T) {
	const maxAllocPerStream = 32 << 10 * raceAllocFactor
	allocated, inUse := watchStreamsMemory(t, 1000, 10)
	t.Logf("per Watch stream (agent and client): %.0f bytes allocated, %.0f bytes of heap and stacks in use", allocated, inUse)
	if allocated > maxAllocPerStream {
		t.Errorf("a Watch stream allocated %.0f bytes, want at most %d", allocated, maxAllocPerStream)
	}
}

// BenchmarkWatchStreamMemory reports what one idle Watch stream costs
// the process (agent and client): go test -run '^$' -bench WatchStreamMemory ./node/grpcapi/
func BenchmarkWatchStreamMemory(b *testing.B) {
	for range b.N {
		allocated, inUse := watchStreamsMemory(b, 1000, 10)
		b.ReportMetric(allocated, "alloc-B/stream")
		b.ReportMetric(inUse, "inuse-B/stream")
	}
}
