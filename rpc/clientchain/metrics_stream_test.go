package clientchain

import (
	"context"
	"errors"
	"io"
	"maps"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/zrpcio/zrpc/internal/grpctest"
)

// uploadMethod is a client-streaming method: the client sends messages,
// the server answers once.
const uploadMethod = "/test.Upload/Send"

var uploadDesc = grpc.StreamDesc{StreamName: "Send", ClientStreams: true}

// serveUpload serves uploadMethod, answering with the number of messages
// it received.
func serveUpload(t *testing.T) string {
	t.Helper()
	desc := uploadDesc
	desc.Handler = func(_ any, stream grpc.ServerStream) error {
		n := 0
		for {
			err := stream.RecvMsg(new(wrapperspb.BytesValue))
			if errors.Is(err, io.EOF) {
				return stream.SendMsg(wrapperspb.Bytes(make([]byte, n)))
			}
			if err != nil {
				return err
			}
			n++
		}
	}
	return grpctest.Serve(t, func(s *grpc.Server) {
		s.RegisterService(&grpc.ServiceDesc{ServiceName: "test.Upload", HandlerType: (*any)(nil), Streams: []grpc.StreamDesc{desc}}, nil)
	})
}

// A client-streaming call ends when its one answer arrives (RecvMsg
// returns it with no error): it is counted then, as a unary call is.
func TestMetricsStreamCountsClientStreamingCalls(t *testing.T) {
	addr := serveUpload(t)
	reg := prometheus.NewPedanticRegistry()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStreamInterceptor(MetricsStream(reg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	cs, err := conn.NewStream(context.Background(), &uploadDesc, uploadMethod)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := cs.SendMsg(wrapperspb.Bytes([]byte("x"))); err != nil {
			t.Fatal(err)
		}
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	reply := new(wrapperspb.BytesValue)
	if err := cs.RecvMsg(reply); err != nil || len(reply.Value) != 3 {
		t.Fatalf("answer: %v, %d messages counted; want 3", err, len(reply.Value))
	}

	want := map[string]float64{"code=OK,method=" + uploadMethod: 1}
	if got := gathered(t, reg, "zrpc_client_requests_total"); !maps.Equal(got, want) {
		t.Errorf("requests_total = %v, want %v", got, want)
	}
}
