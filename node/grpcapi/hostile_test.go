package grpcapi

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testwait"
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

// A session stream that sends nothing is ended with InvalidArgument once
// the open wait has passed, and gives back its max_sessions slot: with
// one slot, a second silent stream opened after it is served (and ended
// the same way) instead of being refused ResourceExhausted, while one
// opened beside it is refused.
func TestSessionThatSendsNothingIsEndedAndFreesItsSlot(t *testing.T) {
	reg := NewRegistry(context.Background(), RegistryConfig{Agent: "a1", Replica: raftstore.NewFSM(16), Metrics: &watchMetrics{},
		MaxSessions: 1, SessionOpenWait: 2 * time.Second})
	client := pb.NewRegistryClient(dialTest(t, serveTest(t, Services{Registry: reg})))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	silent, err := client.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 5*time.Second, "the silent session holding the slot", func() bool { return reg.Streams().Sessions == 1 })
	beside, err := client.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := beside.Recv(); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "max_sessions") {
		t.Fatalf("a session beside the silent one: %v, want ResourceExhausted naming max_sessions", err)
	}
	_, err = silent.Recv()
	wantInvalid(t, "a session that sent nothing", err, "session", "no first message within 2s", "open")
	testwait.For(t, 5*time.Second, "the slot given back", func() bool { return reg.Streams().Sessions == 0 })
	after, err := client.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = after.Recv()
	wantInvalid(t, "a silent session after the first ended", err, "no first message within 2s")
}

// Bytes that are not a request message, unary or streamed, are refused
// with InvalidArgument naming the message type, not Internal.
func TestUndecodableRequestIsInvalidArgument(t *testing.T) {
	reg := NewRegistry(context.Background(), RegistryConfig{Agent: "a1", Replica: raftstore.NewFSM(16), Metrics: &watchMetrics{}})
	cc := dialTest(t, serveTest(t, Services{Registry: reg}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	garbage := []rawBytes{{0xff, 0xff, 0xff}, {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'a'}, {0x0b, 0x0b}}
	for _, b := range garbage {
		for _, method := range []string{pb.Registry_List_FullMethodName, pb.Registry_Register_FullMethodName} {
			err := cc.Invoke(ctx, method, b, new(pb.ListResponse), grpc.ForceCodec(rawCodec{}))
			wantInvalid(t, fmt.Sprintf("%s of % x", method, b), err, "request", "is not a zrpc.v1.")
		}
		stream, err := cc.NewStream(ctx, &pb.Registry_ServiceDesc.Streams[1], pb.Registry_Session_FullMethodName, grpc.ForceCodec(rawCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.SendMsg(b); err != nil {
			t.Fatal(err)
		}
		err = stream.RecvMsg(new(pb.SessionResponse))
		wantInvalid(t, fmt.Sprintf("session opened with % x", b), err, "request", "is not a zrpc.v1.SessionRequest")
	}
	// A request that is one reaches its handler.
	_, err := pb.NewRegistryClient(cc).Get(ctx, &pb.GetRequest{Service: "a/b"})
	wantInvalid(t, "get of service a/b", err, "service", "may contain only letters")
}

// rawBytes is a request sent as it is (rawCodec).
type rawBytes []byte

// rawCodec sends rawBytes as they are and decodes answers as protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return v.(rawBytes), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { return proto.Unmarshal(data, v.(proto.Message)) }
func (rawCodec) Name() string                       { return "proto" }
