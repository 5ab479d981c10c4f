package grpcapi

import (
	"context"
	"fmt"
	"io"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/wirecodec"
	"github.com/zrpcio/zrpc/storage"
)

// BlobStore is the agent's blob store (package storage) as the Blobs API
// uses it.
type BlobStore interface {
	Put(ctx context.Context, h *pb.BlobPutHeader, src io.Reader) (*storage.PutResult, error)
	Get(ctx context.Context, req *pb.BlobGetRequest, send func(*pb.BlobGetResponse) error) error
	Stat(ctx context.Context, name string, minRev uint64, c pb.Consistency) (*pb.BlobStatResponse, error)
	List(ctx context.Context, prefix string, c pb.Consistency) ([]*pb.BlobSummary, uint64, error)
	Delete(ctx context.Context, name string) (uint64, error)
	LeaderRepairStatusOf(ctx context.Context, req *pb.RepairStatusRequest) (*pb.RepairStatusResponse, error)
	StripedPutStore
	ShardReader
}

// Blobs serves the Blobs API from the agent's blob store.
type Blobs struct {
	pb.UnimplementedBlobsServer
	store   BlobStore
	replica interface{ Revision() uint64 }
}

// NewBlobs returns the Blobs service of store; answers carry the revision
// of replica, the agent's registry replica.
func NewBlobs(store BlobStore, replica interface{ Revision() uint64 }) *Blobs {
	return &Blobs{store: store, replica: replica}
}

func (s *Blobs) Put(stream grpc.ClientStreamingServer[pb.BlobPutRequest, pb.BlobPutResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("%w: put stream ended before its header", apierr.ErrInvalidArgument)
	}
	h := first.GetHeader()
	if h == nil {
		return fmt.Errorf("%w: the first message of a put must be its header", apierr.ErrInvalidArgument)
	}
	r := &putReader{stream: stream}
	res, err := s.store.Put(stream.Context(), h, r)
	r.release()
	if err != nil {
		return err
	}
	return stream.SendAndClose(&pb.BlobPutResponse{
		Header: &pb.ResponseHeader{Revision: res.Revision}, Blob: storage.Summary(res.Blob), MissingShards: uint32(res.Missing),
	})
}

// putReader reads the chunks of a Put stream. Each chunk stays in the
// buffer gRPC received it in (wirecodec.Borrow), which is freed once the
// chunk is read, instead of being copied out of it first.
type putReader struct {
	stream grpc.ClientStreamingServer[pb.BlobPutRequest, pb.BlobPutResponse]
	msg    pb.BlobPutRequest // received into again and again
	buf    []byte            // what is left of the current chunk
	free   func()            // frees the current chunk's buffer
}

func (r *putReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		r.release()
		done := wirecodec.Borrow(&r.msg, "chunk")
		err := r.stream.RecvMsg(&r.msg)
		r.free = done()
		if err == io.EOF {
			return 0, io.EOF
		}
		if err != nil {
			return 0, err
		}
		if r.msg.GetHeader() != nil {
			return 0, fmt.Errorf("%w: a put carries one header, then chunks", apierr.ErrInvalidArgument)
		}
		r.buf = r.msg.GetChunk()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// release frees the current chunk's buffer; the reader is done with it.
func (r *putReader) release() {
	r.buf = nil
	if r.free != nil {
		r.free()
		r.free = nil
	}
}

func (s *Blobs) Get(req *pb.BlobGetRequest, stream grpc.ServerStreamingServer[pb.BlobGetResponse]) error {
	return s.store.Get(stream.Context(), req, stream.Send)
}

func (s *Blobs) Stat(ctx context.Context, req *pb.BlobStatRequest) (*pb.BlobStatResponse, error) {
	resp, err := s.store.Stat(ctx, req.Name, req.MinRevision, req.Consistency)
	if err != nil {
		return nil, err
	}
	resp.Header = &pb.ResponseHeader{Revision: s.replica.Revision()}
	return resp, nil
}

func (s *Blobs) List(ctx context.Context, req *pb.BlobListRequest) (*pb.BlobListResponse, error) {
	blobs, rev, err := s.store.List(ctx, req.Prefix, req.Consistency)
	if err != nil {
		return nil, err
	}
	return &pb.BlobListResponse{Header: &pb.ResponseHeader{Revision: rev}, Blobs: blobs}, nil
}

func (s *Blobs) Delete(ctx context.Context, req *pb.BlobDeleteRequest) (*pb.BlobDeleteResponse, error) {
	ctx, err := WithRequestID(ctx, "blob-delete", req.RequestId)
	if err != nil {
		return nil, err
	}
	rev, err := s.store.Delete(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return &pb.BlobDeleteResponse{Header: &pb.ResponseHeader{Revision: rev}}, nil
}

// RepairStatus answers from the leader, which runs repair.
func (s *Blobs) RepairStatus(ctx context.Context, req *pb.RepairStatusRequest) (*pb.RepairStatusResponse, error) {
	return s.store.LeaderRepairStatusOf(ctx, req)
}
