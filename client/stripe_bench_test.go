package client

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// benchStripeSize is what each iteration of the striped blob benchmarks
// puts or reads.
const benchStripeSize = 64 << 20

// newBenchStripeClient starts agents agents storing blobs in 1 MiB
// blocks (2+1 shards on 3 agents, 3+2 on 5) and returns a client of
// them. The agents run in this process: the client is made, and its
// connections' goroutines started, under the profiler label side=client,
// so that -cpuprofile followed by pprof's -tagfocus side=client shows the
// client's CPU alone.
func newBenchStripeClient(b *testing.B, agents int) *Client {
	b.Helper()
	c := testcluster.New(b, agents, testcluster.WithConfig(func(cfg *node.Config) {
		cfg.BlobBlockSize = 1 << 20
		cfg.BlobScrubRate = 0
	}))
	var eps []string
	for i := range c.Size() {
		eps = append(eps, c.GRPCAddr(i))
	}
	var cl *Client
	var err error
	asClient(func() { cl, err = New(Config{Endpoints: eps, Logger: slog.New(slog.DiscardHandler)}) })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cl.Close() })
	return cl
}

// asClient runs f under the profiler label side=client; goroutines it
// starts inherit the label.
func asClient(f func()) {
	pprof.Do(context.Background(), pprof.Labels("side", "client"), func(context.Context) { f() })
}

func benchContext(b *testing.B) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

// BenchmarkStripedPut puts a 64 MiB blob, striped by the client, again
// and again, on 3 and on 5 agents.
func BenchmarkStripedPut(b *testing.B) {
	for _, agents := range []int{3, 5} {
		b.Run(fmt.Sprintf("agents=%d", agents), func(b *testing.B) {
			cl := newBenchStripeClient(b, agents)
			data := randomBlob(benchStripeSize, 3)
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				asClient(func() {
					if _, err := cl.PutBlob(benchContext(b), "bench", bytes.NewReader(data), PutOptions{Size: int64(len(data)), Overwrite: true}); err != nil {
						b.Fatal(err)
					}
				})
			}
		})
	}
}

// BenchmarkStripedGet reads a 64 MiB blob from its holders again and
// again, on 3 and on 5 agents.
func BenchmarkStripedGet(b *testing.B) {
	for _, agents := range []int{3, 5} {
		b.Run(fmt.Sprintf("agents=%d", agents), func(b *testing.B) {
			cl := newBenchStripeClient(b, agents)
			data := randomBlob(benchStripeSize, 4)
			if _, err := cl.PutBlob(benchContext(b), "bench", bytes.NewReader(data), PutOptions{Size: int64(len(data))}); err != nil {
				b.Fatal(err)
			}
			// Read as zrpcctl does: into a buffer of its own, written on.
			dst := make([]byte, 256<<10)
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				asClient(func() {
					r, err := cl.GetBlob(benchContext(b), "bench", GetOptions{})
					if err != nil {
						b.Fatal(err)
					}
					if _, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, r, dst); err != nil {
						b.Fatal(err)
					}
					r.Close()
				})
			}
		})
	}
}
