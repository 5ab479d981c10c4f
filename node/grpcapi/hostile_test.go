package grpcapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// serveRegistry serves a Registry over an empty replica and returns a
// connection's client of it.
func serveRegistry(t *testing.T) pb.RegistryClient {
	t.Helper()
	reg := NewRegistry(context.Background(), RegistryConfig{Agent: "a1", Replica: raftstore.NewFSM(16), Metrics: &watchMetrics{}})
	return pb.NewRegistryClient(dialTest(t, serveTest(t, Services{Registry: reg})))
}

// wantInvalid fails t unless err is InvalidArgument naming every one of
// words.
func wantInvalid(t *testing.T, what string, err error, words ...string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("%s: %v, want InvalidArgument", what, err)
	}
	for _, w := range words {
		if !strings.Contains(st.Message(), w) {
			t.Fatalf("%s: %q, want it to name %q", what, st.Message(), w)
		}
	}
}

// A session stream closed before its first message is refused with
// InvalidArgument saying the first message must be open, not answered
// with the reader's EOF as an internal error.
func TestSessionEndedBeforeItsOpenIsInvalidArgument(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := serveRegistry(t).Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantInvalid(t, "a session closed at once", err, "session", "before its first message, which must be open")
}
