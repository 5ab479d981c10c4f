package client

import (
	"context"
	"crypto/sha256"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/grpctest"
)

// silentGet is an agent that takes a Get stream and never sends on it.
type silentGet struct {
	zrpcpb.UnimplementedBlobsServer
}

func (silentGet) Get(_ *zrpcpb.BlobGetRequest, stream zrpcpb.Blobs_GetServer) error {
	<-stream.Context().Done()
	return stream.Context().Err()
}

// smallGet is an agent that serves every Get as a blob of 100 bytes.
type smallGet struct {
	zrpcpb.UnimplementedBlobsServer
}

func (smallGet) Get(req *zrpcpb.BlobGetRequest, stream zrpcpb.Blobs_GetServer) error {
	sum := sha256.Sum256(make([]byte, 100))
	if err := stream.Send(&zrpcpb.BlobGetResponse{Blob: &zrpcpb.Blob{Name: req.Name, Size: 100, Sha256: sum[:]}}); err != nil {
		return err
	}
	return stream.Send(&zrpcpb.BlobGetResponse{Chunk: make([]byte, 100)})
}

// TestGetThroughAgentBoundsTheFirstAnswer: a read through an agent that
// takes the stream and sends nothing ends after CallTimeout when the
// caller gave no deadline, saying so, instead of holding the caller for
// good; with a second agent it is read there.
func TestGetThroughAgentBoundsTheFirstAnswer(t *testing.T) {
	silent := grpctest.Serve(t, func(s *grpc.Server) { zrpcpb.RegisterBlobsServer(s, silentGet{}) })
	c, err := New(Config{Endpoints: []string{silent}, DialTimeout: time.Second, CallTimeout: 300 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	got := make(chan error, 1)
	go func() {
		r, err := c.GetBlob(context.Background(), "b", GetOptions{ThroughAgent: true})
		if err == nil {
			r.Close()
		}
		got <- err
	}()
	select {
	case err := <-got:
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "sent nothing within 300ms") {
			t.Fatalf("read through a silent agent: %v, want Unavailable saying it sent nothing within 300ms", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read through an agent that sends nothing, without a deadline, was still waiting after 10s")
	}

	live := grpctest.Serve(t, func(s *grpc.Server) { zrpcpb.RegisterBlobsServer(s, smallGet{}) })
	c2, err := New(Config{Endpoints: []string{silent, live}, DialTimeout: time.Second, AttemptTimeout: 300 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c2.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c2.GetBlob(ctx, "b", GetOptions{ThroughAgent: true})
	if err != nil {
		t.Fatalf("read through a silent agent and a live one: %v", err)
	}
	defer r.Close()
	if n, err := io.Copy(io.Discard, r); err != nil || n != 100 {
		t.Fatalf("read %d bytes, %v; want the blob's 100 from the live agent", n, err)
	}
}
