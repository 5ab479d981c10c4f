package node

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// TestWriteRepeatedWithRequestIDAnsweredOnce: a write sent again with the
// request id of one already applied gets the first answer (its revision, no
// NotFound), for a deregister and for a blob delete.
func TestWriteRepeatedWithRequestIDAnsweredOnce(t *testing.T) {
	n := startNode(t, testConfig(t))
	conn, c := dial(t, n.GRPCAddr())
	blobs := pb.NewBlobsClient(conn)
	ctx := ctxT(t)

	if _, err := c.Register(ctx, &pb.RegisterRequest{Instance: inst("user.rpc", "u1", "127.0.0.1:9001"), RequestId: "reg-1"}); err != nil {
		t.Fatal(err)
	}
	dereg := &pb.DeregisterRequest{Service: "user.rpc", Id: "u1", RequestId: "dereg-1"}
	first, err := c.Deregister(ctx, dereg)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Deregister(ctx, dereg)
	if err != nil {
		t.Fatalf("Deregister repeated with its request id: %v, want the first answer", err)
	}
	if again.Header.Revision != first.Header.Revision {
		t.Fatalf("repeat answered revision %d, first %d", again.Header.Revision, first.Header.Revision)
	}
	// The same id sent with another kind of write is another request.
	_, err = c.Register(ctx, &pb.RegisterRequest{Instance: inst("user.rpc", "u1", "127.0.0.1:9001"), RequestId: "dereg-1"})
	if err != nil {
		t.Fatalf("Register with a deregister's request id: %v", err)
	}
	if got := getInstances(t, c, "user.rpc"); len(got) != 1 {
		t.Fatalf("instances after register = %v, want u1", got)
	}

	put, err := blobs.Put(ctx)
	if err != nil {
		t.Fatal(err)
	}
	put.Send(&pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Header{Header: &pb.BlobPutHeader{Name: "a.bin"}}})
	put.Send(&pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Chunk{Chunk: []byte("hello")}})
	if _, err := put.CloseAndRecv(); err != nil {
		t.Fatalf("put blob: %v", err)
	}
	del := &pb.BlobDeleteRequest{Name: "a.bin", RequestId: "del-1"}
	d1, err := blobs.Delete(ctx, del)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := blobs.Delete(ctx, del)
	if err != nil {
		t.Fatalf("blob Delete repeated with its request id: %v, want the first answer", err)
	}
	if d1.Header.Revision != d2.Header.Revision {
		t.Fatalf("repeat answered revision %d, first %d", d2.Header.Revision, d1.Header.Revision)
	}
	if _, err := blobs.Delete(ctx, &pb.BlobDeleteRequest{Name: "a.bin"}); status.Code(err) != codes.NotFound {
		t.Fatalf("a new blob Delete = %v, want NotFound", err)
	}
}

func TestWriteRejectsBadRequestID(t *testing.T) {
	n := startNode(t, testConfig(t))
	conn, c := dial(t, n.GRPCAddr())
	ctx := ctxT(t)
	for _, id := range []string{strings.Repeat("a", 65), "has space", "a/b", "é"} {
		_, err := c.Register(ctx, &pb.RegisterRequest{Instance: inst("user.rpc", "u1", "127.0.0.1:9001"), RequestId: id})
		checkBadRequestID(t, "Register", id, err)
		_, err = c.Deregister(ctx, &pb.DeregisterRequest{Service: "user.rpc", Id: "u1", RequestId: id})
		checkBadRequestID(t, "Deregister", id, err)
		_, err = pb.NewBlobsClient(conn).Delete(ctx, &pb.BlobDeleteRequest{Name: "a.bin", RequestId: id})
		checkBadRequestID(t, "blob Delete", id, err)
	}
	if got := getInstances(t, c, "user.rpc"); len(got) != 0 {
		t.Fatalf("a write with a bad request id was applied: %v", got)
	}
}

func checkBadRequestID(t *testing.T, call, id string, err error) {
	t.Helper()
	if !errors.Is(apierr.FromStatus(err), apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), "request_id") {
		t.Fatalf("%s with request_id %q = %v, want InvalidArgument naming request_id", call, id, err)
	}
}
