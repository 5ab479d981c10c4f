package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/storage"
)

// stripeStore is a blob store whose client-striped put calls record what
// they were given; its other calls are not used.
type stripeStore struct {
	BlobStore
	blocks    []uint32 // WriteShards: the blocks received
	requestID string   // BeginPut's or CommitPut's
	called    bool
}

func (f *stripeStore) BeginPut(_ context.Context, h *pb.BlobPutHeader, requestID string) (*pb.BeginPutResponse, error) {
	f.called, f.requestID = true, requestID
	return &pb.BeginPutResponse{BlobId: "ab" + h.Name}, nil
}

func (f *stripeStore) WriteShards(_ context.Context, recv func() (*pb.WriteShardsRequest, [][]byte, error)) (*pb.WriteShardsResponse, error) {
	for {
		msg, _, err := recv()
		if errors.Is(err, io.EOF) {
			return &pb.WriteShardsResponse{Blocks: f.blocks}, nil
		}
		if err != nil {
			return nil, err
		}
		if msg.Header == nil && msg.Block == 99 {
			return nil, fmt.Errorf("%w: block 99 is refused here", apierr.ErrInvalidArgument)
		}
		if msg.Header == nil {
			f.blocks = append(f.blocks, msg.Block)
		}
	}
}

func (f *stripeStore) RenewPut(context.Context, string, string) (int64, uint64, error) {
	return 1234, 7, nil
}

func (f *stripeStore) CommitPut(_ context.Context, req *pb.CommitPutRequest, requestID string) (*storage.PutResult, error) {
	f.called, f.requestID = true, requestID
	return &storage.PutResult{Blob: req.Blob, Revision: 9, Missing: 2}, nil
}

func (f *stripeStore) AbortPut(_ context.Context, name, id string) (uint64, error) {
	if name != "n" || id != "id" {
		return 0, fmt.Errorf("%w: not this put", apierr.ErrNotFound)
	}
	return 11, nil
}

func TestStripedPutCallsReachTheBlobStore(t *testing.T) {
	store := &stripeStore{}
	blobs := serveBlobs(t, store)
	ctx := context.Background()

	if _, err := blobs.BeginPut(ctx, &pb.BeginPutRequest{}); status.Code(err) != codes.InvalidArgument || store.called {
		t.Fatalf("BeginPut without a header: %v (store called: %v), want InvalidArgument from the API", err, store.called)
	}
	if resp, err := blobs.BeginPut(ctx, &pb.BeginPutRequest{Header: &pb.BlobPutHeader{Name: "x"}}); err != nil || resp.BlobId != "abx" || store.requestID != "" {
		t.Fatalf("BeginPut = %v, %v with request id %q", resp, err, store.requestID)
	}
	store.called = false
	if _, err := blobs.BeginPut(ctx, &pb.BeginPutRequest{Header: &pb.BlobPutHeader{Name: "x"}, RequestId: "bad id!"}); status.Code(err) != codes.InvalidArgument || store.called {
		t.Fatalf("BeginPut with a malformed request id: %v (store called: %v), want InvalidArgument from the API", err, store.called)
	}
	if _, err := blobs.BeginPut(ctx, &pb.BeginPutRequest{Header: &pb.BlobPutHeader{Name: "x"}, RequestId: "b-1"}); err != nil || store.requestID != "client/blob-begin/b-1" {
		t.Fatalf("BeginPut = %v with request id %q, want client/blob-begin/b-1", err, store.requestID)
	}

	stream, err := blobs.WriteShards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []*pb.WriteShardsRequest{{Header: &pb.WriteShardsHeader{Name: "x"}}, {Block: 0}, {Block: 1}} {
		if err := stream.Send(msg); err != nil {
			t.Fatal(err)
		}
	}
	if resp, err := stream.CloseAndRecv(); err != nil || len(resp.Blocks) != 2 {
		t.Fatalf("WriteShards = %v, %v; want the two blocks sent", resp, err)
	}
	stream, err = blobs.WriteShards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&pb.WriteShardsRequest{Block: 99})
	if _, err := stream.CloseAndRecv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("WriteShards refused by the store: %v, want InvalidArgument", err)
	}

	if resp, err := blobs.RenewPut(ctx, &pb.RenewPutRequest{Name: "n", BlobId: "id"}); err != nil || resp.LeaseExpires != 1234 || resp.Header.Revision != 7 {
		t.Fatalf("RenewPut = %v, %v", resp, err)
	}

	store.called = false
	if _, err := blobs.CommitPut(ctx, &pb.CommitPutRequest{Blob: &pb.Blob{Name: "n"}, RequestId: "bad id!"}); status.Code(err) != codes.InvalidArgument || store.called {
		t.Fatalf("CommitPut with a bad request id: %v (store called: %v), want InvalidArgument from the API", err, store.called)
	}
	resp, err := blobs.CommitPut(ctx, &pb.CommitPutRequest{Blob: &pb.Blob{Name: "n"}, RequestId: "r-1"})
	if err != nil || resp.Header.Revision != 9 || resp.MissingShards != 2 || store.requestID != "client/blob-commit/r-1" {
		t.Fatalf("CommitPut = %v, %v with request id %q", resp, err, store.requestID)
	}

	if resp, err := blobs.AbortPut(ctx, &pb.AbortPutRequest{Name: "n", BlobId: "id"}); err != nil || resp.Header.Revision != 11 {
		t.Fatalf("AbortPut = %v, %v", resp, err)
	}
	if _, err := blobs.AbortPut(ctx, &pb.AbortPutRequest{Name: "n", BlobId: "other"}); status.Code(err) != codes.NotFound {
		t.Fatalf("AbortPut refused by the store: %v, want NotFound", err)
	}
}
