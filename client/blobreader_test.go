package client

import (
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/grpctest"
)

// endlessGet is an agent whose Get stream goes on past the end of the blob
// it describes, until the client goes away.
type endlessGet struct {
	zrpcpb.UnimplementedBlobsServer
	size uint64
}

func (e endlessGet) Get(req *zrpcpb.BlobGetRequest, stream zrpcpb.Blobs_GetServer) error {
	if err := stream.Send(&zrpcpb.BlobGetResponse{Blob: &zrpcpb.Blob{Name: req.Name, Size: e.size}}); err != nil {
		return err
	}
	chunk := make([]byte, 4<<10)
	for {
		if err := stream.Send(&zrpcpb.BlobGetResponse{Chunk: chunk}); err != nil {
			return err
		}
	}
}

// TestGetBlobStopsAtTheBlobsEndWhenTheAgentSendsMore: bytes past the size
// the read covers are an error, so that a broken agent cannot make a
// reader (io.ReadAll, a block read through an agent) hold all it sends.
func TestGetBlobStopsAtTheBlobsEndWhenTheAgentSendsMore(t *testing.T) {
	addr := grpctest.Serve(t, func(s *grpc.Server) { zrpcpb.RegisterBlobsServer(s, endlessGet{size: 10 << 10}) })
	c, err := New(Config{Endpoints: []string{addr}, DialTimeout: time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })

	for _, opts := range []GetOptions{{ThroughAgent: true}, {ThroughAgent: true, Offset: 100, Length: 1000}} {
		r, err := c.GetBlob(testContext(t), "endless", opts)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, io.LimitReader(r, 1<<20))
		r.Close()
		if err == nil || uint64(n) > r.Size() {
			t.Fatalf("read %+v: %d bytes of a read of %d, error %v; want an error by the end of the read", opts, n, r.Size(), err)
		}
		t.Logf("read %+v: %d bytes, %v", opts, n, err)
	}
}
