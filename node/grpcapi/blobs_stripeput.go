package grpcapi

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/wirecodec"
	"github.com/zrpcio/zrpc/storage"
)

// StripedPutStore is the blob store's side of client-striped puts (see
// storage.Store.BeginPut): the client encodes and sends the shards to
// their agents itself, and the agents check and keep them.
type StripedPutStore interface {
	BeginPut(ctx context.Context, h *pb.BlobPutHeader, requestID string) (*pb.BeginPutResponse, error)
	WriteShards(ctx context.Context, recv func() (*pb.WriteShardsRequest, [][]byte, error)) (*pb.WriteShardsResponse, error)
	RenewPut(ctx context.Context, name, id string) (expires int64, rev uint64, err error)
	CommitPut(ctx context.Context, req *pb.CommitPutRequest, requestID string) (*storage.PutResult, error)
	AbortPut(ctx context.Context, name, id string) (uint64, error)
}

func (s *Blobs) BeginPut(ctx context.Context, req *pb.BeginPutRequest) (*pb.BeginPutResponse, error) {
	if req.GetHeader() == nil {
		return nil, apierr.Invalid("header", "is required: BeginPut needs the put's header")
	}
	rid, err := clientRequestID("blob-begin", req.RequestId)
	if err != nil {
		return nil, err
	}
	return s.store.BeginPut(ctx, req.Header, rid)
}

func (s *Blobs) WriteShards(stream grpc.ClientStreamingServer[pb.WriteShardsRequest, pb.WriteShardsResponse]) error {
	r := &shardRecv{stream: stream}
	defer r.release()
	resp, err := s.store.WriteShards(stream.Context(), r.recv)
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

// shardRecv receives the messages of a WriteShards stream, each payload
// left in the HTTP/2 frames gRPC received it in (wirecodec.BorrowPieces)
// instead of copied into one buffer: the store checks and writes the
// pieces. The store is done with a message's payload once it asks for
// the next (it stages each shard before that), so each receive frees the
// previous message's frames.
type shardRecv struct {
	stream grpc.ClientStreamingServer[pb.WriteShardsRequest, pb.WriteShardsResponse]
	free   func()
}

func (r *shardRecv) recv() (*pb.WriteShardsRequest, [][]byte, error) {
	r.release()
	msg := new(pb.WriteShardsRequest)
	done := wirecodec.BorrowPieces(msg, "payload")
	err := r.stream.RecvMsg(msg)
	var pieces [][]byte
	pieces, r.free = done()
	if err != nil {
		return nil, nil, err
	}
	return msg, pieces, nil
}

// release frees the last message's buffer.
func (r *shardRecv) release() {
	if r.free != nil {
		r.free()
		r.free = nil
	}
}

func (s *Blobs) RenewPut(ctx context.Context, req *pb.RenewPutRequest) (*pb.RenewPutResponse, error) {
	expires, rev, err := s.store.RenewPut(ctx, req.Name, req.BlobId)
	if err != nil {
		return nil, err
	}
	return &pb.RenewPutResponse{Header: &pb.ResponseHeader{Revision: rev}, LeaseExpires: expires}, nil
}

func (s *Blobs) CommitPut(ctx context.Context, req *pb.CommitPutRequest) (*pb.BlobPutResponse, error) {
	rid, err := clientRequestID("blob-commit", req.RequestId)
	if err != nil {
		return nil, err
	}
	res, err := s.store.CommitPut(ctx, req, rid)
	if err != nil {
		return nil, err
	}
	return &pb.BlobPutResponse{
		Header: &pb.ResponseHeader{Revision: res.Revision}, Blob: storage.Summary(res.Blob), MissingShards: uint32(res.Missing),
	}, nil
}

func (s *Blobs) AbortPut(ctx context.Context, req *pb.AbortPutRequest) (*pb.AbortPutResponse, error) {
	rev, err := s.store.AbortPut(ctx, req.Name, req.BlobId)
	if err != nil {
		return nil, fmt.Errorf("abort put: %w", err)
	}
	return &pb.AbortPutResponse{Header: &pb.ResponseHeader{Revision: rev}}, nil
}
