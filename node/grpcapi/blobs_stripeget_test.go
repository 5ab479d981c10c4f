package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// shardReaderFake is a blob store that locates one blob, "a", and sends
// its shards, the second one failing, or refuses other names.
type shardReaderFake struct{ BlobStore }

func (shardReaderFake) Locate(_ context.Context, name string, _ uint64, _ pb.Consistency) (*pb.Blob, []string, error) {
	if name != "a" {
		return nil, nil, fmt.Errorf("%w: blob %q", apierr.ErrNotFound, name)
	}
	return &pb.Blob{Name: "a", Id: "0123456789abcdef", Nodes: []string{"n1", "n2"}}, []string{"127.0.0.1:1", ""}, nil
}

func (shardReaderFake) ReadShards(_ context.Context, req *pb.ReadShardsRequest, send func(*pb.ReadShardsResponse) error) error {
	if req.Name != "a" {
		return fmt.Errorf("%w: blob %q has no version with id %s", apierr.ErrNotFound, req.Name, req.BlobId)
	}
	for i, p := range req.Shards {
		msg := &pb.ReadShardsResponse{Shard: p, Payload: []byte{byte(i)}}
		if i == 1 {
			msg = &pb.ReadShardsResponse{Shard: p, Error: "corrupt shard"}
		}
		if err := send(msg); err != nil {
			return err
		}
	}
	return nil
}

// revisionFake is a replica at revision 42.
type revisionFake struct{}

func (revisionFake) Revision() uint64 { return 42 }

func serveBlobs(t *testing.T, store BlobStore) pb.BlobsClient {
	t.Helper()
	reg := NewRegistry(context.Background(), RegistryConfig{Agent: "a1", Replica: raftstore.NewFSM(16), Metrics: &watchMetrics{}})
	addr := serveTest(t, Services{Registry: reg, Blobs: NewBlobs(store, revisionFake{})})
	cc := dialTest(t, addr)
	return pb.NewBlobsClient(cc)
}

// TestLocateAndReadShardsOverTheAPI: Locate answers the store's metadata
// and addresses at the replica's revision; ReadShards streams the store's
// messages, a failed shard among them, in order; the store's errors
// reach the client as their sentinels.
func TestLocateAndReadShardsOverTheAPI(t *testing.T) {
	ctx := context.Background()
	blobs := serveBlobs(t, shardReaderFake{})
	loc, err := blobs.Locate(ctx, &pb.LocateRequest{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if loc.Header.GetRevision() != 42 || loc.Blob.GetId() != "0123456789abcdef" || len(loc.Addresses) != 2 || loc.Addresses[0] != "127.0.0.1:1" {
		t.Fatalf("Locate answered %v", loc)
	}
	if _, err := blobs.Locate(ctx, &pb.LocateRequest{Name: "b"}); !errors.Is(apierr.FromStatus(err), apierr.ErrNotFound) {
		t.Fatalf("Locate of a missing blob: %v, want NotFound", err)
	}

	stream, err := blobs.ReadShards(ctx, &pb.ReadShardsRequest{Name: "a", BlobId: "0123456789abcdef",
		Shards: []*pb.ShardPos{{Block: 0}, {Block: 1}, {Block: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		failed := i == 1
		if msg.Shard.GetBlock() != uint32(i) || (msg.Error != "") != failed || (!failed && msg.Payload[0] != byte(i)) {
			t.Fatalf("message %d: %v", i, msg)
		}
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("after the last shard: %v, want EOF", err)
	}
	stream, err = blobs.ReadShards(ctx, &pb.ReadShardsRequest{Name: "b", BlobId: "0123456789abcdef", Shards: []*pb.ShardPos{{}}})
	if err == nil {
		_, err = stream.Recv()
	}
	if !errors.Is(apierr.FromStatus(err), apierr.ErrNotFound) {
		t.Fatalf("ReadShards refused by the store: %v, want NotFound", err)
	}
}
