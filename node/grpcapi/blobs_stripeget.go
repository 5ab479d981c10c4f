package grpcapi

import (
	"context"

	"google.golang.org/grpc"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// ShardReader is what client-striped reads need of the blob store: where
// a blob's shards are, and the shards this agent holds.
type ShardReader interface {
	Locate(ctx context.Context, name string, minRev uint64, c pb.Consistency) (*pb.Blob, []string, error)
	ReadShards(ctx context.Context, req *pb.ReadShardsRequest, send func(*pb.ReadShardsResponse) error) error
}

// Locate answers a blob's whole metadata and the addresses of its holders.
func (s *Blobs) Locate(ctx context.Context, req *pb.LocateRequest) (*pb.LocateResponse, error) {
	b, addrs, err := s.store.Locate(ctx, req.Name, req.MinRevision, req.Consistency)
	if err != nil {
		return nil, err
	}
	return &pb.LocateResponse{Header: &pb.ResponseHeader{Revision: s.replica.Revision()}, Blob: b, Addresses: addrs}, nil
}

// ReadShards streams the shards asked for that this agent holds.
func (s *Blobs) ReadShards(req *pb.ReadShardsRequest, stream grpc.ServerStreamingServer[pb.ReadShardsResponse]) error {
	return s.store.ReadShards(stream.Context(), req, stream.Send)
}
