package client

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// benchStripeSize is what each iteration of the striped blob benchmarks
// puts or reads.
const benchStripeSize = 64 << 20

// newBenchStripeClient starts three agents storing blobs in 1 MiB blocks
// (2+1 shards) and returns a client of them. The agents run in this
// process: profile the client's functions (-cpuprofile, then focus on
// package client), not the whole.
func newBenchStripeClient(b *testing.B) *Client {
	b.Helper()
	c := testcluster.New(b, 3, testcluster.WithConfig(func(cfg *node.Config) {
		cfg.BlobBlockSize = 1 << 20
		cfg.BlobScrubRate = 0
	}))
	var eps []string
	for i := range c.Size() {
		eps = append(eps, c.GRPCAddr(i))
	}
	cl, err := New(Config{Endpoints: eps, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cl.Close() })
	return cl
}

func benchContext(b *testing.B) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

// BenchmarkStripedPut puts a 64 MiB blob, striped by the client, again
// and again.
func BenchmarkStripedPut(b *testing.B) {
	cl := newBenchStripeClient(b)
	data := randomBlob(benchStripeSize, 3)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := cl.PutBlob(benchContext(b), "bench", bytes.NewReader(data), PutOptions{Size: int64(len(data)), Overwrite: true}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStripedGet reads a 64 MiB blob from its holders again and
// again.
func BenchmarkStripedGet(b *testing.B) {
	cl := newBenchStripeClient(b)
	data := randomBlob(benchStripeSize, 4)
	if _, err := cl.PutBlob(benchContext(b), "bench", bytes.NewReader(data), PutOptions{Size: int64(len(data))}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		r, err := cl.GetBlob(benchContext(b), "bench", GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}
