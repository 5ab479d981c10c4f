package node

import (
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func TestPeerCodecEncodesForwardedWritesAsProtobufDoes(t *testing.T) {
	reg := func(md map[string]string) *pb.Command {
		return &pb.Command{RequestId: "z1-1", Time: 42, Kind: &pb.Command_Register{Register: &pb.Instance{
			Id: "i1", Service: "user.rpc", Address: "127.0.0.1:9000", Tags: []string{"a"}, Metadata: md,
		}}}
	}
	dereg := &pb.Command{Kind: &pb.Command_Deregister{Deregister: &pb.InstanceRef{Service: "user.rpc", Id: "i1"}}}
	msgs := []proto.Message{
		reg(nil), reg(map[string]string{"k": "v"}), reg(map[string]string{"b": "2", "a": "1", "": ""}), dereg,
		&pb.ApplyBatchRequest{Commands: []*pb.Command{reg(map[string]string{"x": "1", "y": "2"}), dereg, reg(nil)}},
		&pb.ApplyBatchRequest{},
		&pb.ApplyResponse{Revision: 7}, // not a forwarded write: wirecodec's
	}
	for _, m := range msgs {
		before := proto.Clone(m)
		data, err := peerCodec{}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got := m.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(data.Materialize(), got); err != nil {
			t.Fatalf("decode the encoding of %v: %v", m, err)
		}
		if !proto.Equal(got, m) {
			t.Fatalf("encoded %v, decoded %v", m, got)
		}
		if !proto.Equal(m, before) {
			t.Fatalf("encoding changed %v, was %v", m, before)
		}
	}
	// A batch holding a nil command is left to wirecodec (a panic here
	// fails the test).
	_, _ = peerCodec{}.Marshal(&pb.ApplyBatchRequest{Commands: []*pb.Command{nil}})
}
