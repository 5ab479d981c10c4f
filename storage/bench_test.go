package storage_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

const benchBlob = 64 << 20

// BenchmarkBlob measures put and get of a 64 MiB blob through one agent of
// 3- and 5-agent clusters, healthy and degraded (m agents killed), next to
// the same bytes streamed over one plain gRPC stream to one process that
// writes them to one file (fsynced) and reads them back.
//
//	go test -run '^$' -bench BenchmarkBlob -benchtime 5x ./storage/
func BenchmarkBlob(b *testing.B) {
	data := randomBytes(benchBlob, 99)
	b.Run("plain-grpc-stream", func(b *testing.B) { benchPlainStream(b, data) })
	for _, agents := range []int{3, 5} {
		b.Run(fmt.Sprintf("agents=%d", agents), func(b *testing.B) { benchCluster(b, agents, data) })
	}
}

func benchCluster(b *testing.B, agents int, data []byte) {
	c := testcluster.New(b, agents, testcluster.WithConfig(func(c *node.Config) {
		c.BlobScrubRate = 0
		c.BlobRepairDelay = time.Hour // measure degraded reads, not repair
	}))
	waitAlive(b, c, agents)
	cl := agentClient(b, c, 0)
	ctx := context.Background()
	b.Run("put", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; b.Loop(); i++ {
			if _, err := cl.PutBlob(ctx, "bench/put", bytes.NewReader(data), client.PutOptions{Overwrite: true, Size: int64(len(data))}); err != nil {
				b.Fatal(err)
			}
		}
	})
	if _, err := cl.PutBlob(ctx, "bench/get", bytes.NewReader(data), client.PutOptions{Overwrite: true}); err != nil {
		b.Fatal(err)
	}
	readAll := func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			r, err := cl.GetBlob(ctx, "bench/get", client.GetOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, r); err != nil || n != int64(len(data)) {
				b.Fatalf("read %d bytes: %v", n, err)
			}
			r.Close()
		}
	}
	b.Run("get", readAll)
	m := 1
	if agents == 5 {
		m = 2
	}
	for i := agents - m; i < agents; i++ {
		c.Kill(i)
	}
	b.Run(fmt.Sprintf("get-degraded-%d-down", m), readAll)
}

// benchPlainStream: one gRPC client stream of the bytes to a server that
// writes them to a file and fsyncs, then one server stream reading it back.
func benchPlainStream(b *testing.B, data []byte) {
	dir := b.TempDir()
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(16 << 20))
	pb.RegisterBlobsServer(srv, &plainBlobs{dir: dir})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	b.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	bc := pb.NewBlobsClient(conn)
	ctx := context.Background()
	b.Run("put", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			stream, err := bc.Put(ctx)
			if err != nil {
				b.Fatal(err)
			}
			for off := 0; off < len(data); off += 512 << 10 {
				chunk := data[off:min(off+512<<10, len(data))]
				if err := stream.Send(&pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Chunk{Chunk: chunk}}); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := stream.CloseAndRecv(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("get", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			stream, err := bc.Get(ctx, &pb.BlobGetRequest{Name: "plain"})
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for {
				msg, err := stream.Recv()
				if err == io.EOF {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
				n += len(msg.Chunk)
			}
			if n != len(data) {
				b.Fatalf("read %d bytes", n)
			}
		}
	})
}

type plainBlobs struct {
	pb.UnimplementedBlobsServer
	dir string
}

func (p *plainBlobs) Put(stream grpc.ClientStreamingServer[pb.BlobPutRequest, pb.BlobPutResponse]) error {
	f, err := os.Create(filepath.Join(p.dir, "plain"))
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if _, err := f.Write(msg.GetChunk()); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return stream.SendAndClose(&pb.BlobPutResponse{})
}

func (p *plainBlobs) Get(req *pb.BlobGetRequest, stream grpc.ServerStreamingServer[pb.BlobGetResponse]) error {
	f, err := os.Open(filepath.Join(p.dir, "plain"))
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if err := stream.Send(&pb.BlobGetResponse{Chunk: buf[:n]}); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// BenchmarkRepair measures how fast repair rebuilds the shards of a failed
// agent: 6 agents, a 256 MiB 3+2 blob, one agent holding shards killed; the
// time from the kill until the blob is healthy again (failure detection,
// 100 ms repair delay and the rebuild) is reported as s/failure, and the
// bytes rebuilt over that time as rebuilt-MB/s; rebuild-MB/s counts only
// the time from the failure being seen (stat degraded) to healthy.
//
//	go test -run '^$' -bench BenchmarkRepair -benchtime 3x ./storage/
func BenchmarkRepair(b *testing.B) {
	data := randomBytes(4*benchBlob, 98)
	ctx := context.Background()
	var rebuilt, elapsed, rebuilding float64
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		c := testcluster.New(b, 6, testcluster.WithConfig(func(c *node.Config) {
			c.BlobScrubRate = 0
			c.BlobRepairDelay = 100 * time.Millisecond
			c.BlobRepairInterval = 100 * time.Millisecond
		}))
		waitAlive(b, c, 6)
		cl := agentClient(b, c, 0)
		if _, err := cl.PutBlob(ctx, "bench/repair", bytes.NewReader(data), client.PutOptions{Data: 3, Parity: 2}); err != nil {
			b.Fatal(err)
		}
		victim := -1
		for j := 1; j < 6; j++ {
			if !c.Node(j).Store().IsLeader() && shardFilesB(c, j) > 0 {
				victim = j
				break
			}
		}
		before, _ := cl.RepairStatus(ctx)
		b.StartTimer()
		start := time.Now()
		c.Kill(victim)
		c.WaitFor(time.Minute, "blob degraded", func() bool {
			st, err := cl.StatBlob(ctx, "bench/repair")
			return err == nil && st.Health == "degraded"
		})
		seen := time.Now()
		c.WaitFor(5*time.Minute, "blob healthy again", func() bool {
			st, err := cl.StatBlob(ctx, "bench/repair")
			return err == nil && st.Health == "healthy"
		})
		elapsed += time.Since(start).Seconds()
		rebuilding += time.Since(seen).Seconds()
		b.StopTimer()
		after, _ := cl.RepairStatus(ctx)
		if after != nil && before != nil && after.Leader == before.Leader {
			rebuilt += float64(after.RebuiltBytes - before.RebuiltBytes)
		}
		b.StartTimer()
	}
	if elapsed > 0 {
		b.ReportMetric(rebuilt/elapsed/1e6, "rebuilt-MB/s")
		b.ReportMetric(rebuilt/rebuilding/1e6, "rebuild-MB/s")
		b.ReportMetric(elapsed/float64(b.N), "s/failure")
	}
}

func shardFilesB(c *testcluster.Cluster, i int) int {
	n, _ := c.Node(i).Blobs().Shards().Usage()
	return int(n)
}
