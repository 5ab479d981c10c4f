package grpcapi

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// registration is a registration as package client sends it, with n
// metadata entries.
func registration(n int) *pb.Instance {
	inst := &pb.Instance{
		Id: "i1", Service: "user.rpc", Address: "127.0.0.1:9000", Weight: 100, Zone: "zone-a", Version: "v1",
		Tags: []string{"primary", ""}, Check: &pb.Check{Ttl: durationpb.New(30e9)},
	}
	if n > 0 {
		inst.Metadata = make(map[string]string, n)
		for i := range n {
			inst.Metadata[fmt.Sprint("k", i)] = fmt.Sprint("value ", i)
		}
		inst.Metadata[""] = ""
	}
	return inst
}

// inPieces is b as gRPC may hand it to a codec: in several buffers.
func inPieces(b []byte) mem.BufferSlice {
	if len(b) < 2 {
		return mem.BufferSlice{mem.SliceBuffer(b)}
	}
	return mem.BufferSlice{mem.SliceBuffer(b[:len(b)/2]), mem.SliceBuffer(b[len(b)/2:])}
}

func TestRegistryCodecDecodesRegistrationsAsProtobufDoes(t *testing.T) {
	unknown := protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 7)
	var msgs [][]byte
	for n := range 5 {
		req := &pb.RegisterRequest{Instance: registration(n), RequestId: fmt.Sprint("req-", n)}
		b, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		cmd, err := proto.Marshal(&pb.Command{Kind: &pb.Command_Register{Register: registration(n)}, RequestId: "r", Time: 42})
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, b, cmd, append(b, unknown...), append(b[:len(b):len(b)], b...)) // with an unknown field; twice over (merged)
	}
	msgs = append(msgs, nil, []byte{0x0a, 0x05, 0x0a}) // empty; cut short
	batch, err := proto.Marshal(&pb.ApplyBatchRequest{Commands: []*pb.Command{
		{Kind: &pb.Command_Register{Register: registration(3)}, RequestId: "a"},
		{Kind: &pb.Command_Deregister{Deregister: &pb.InstanceRef{Service: "s", Id: "i"}}},
		{Kind: &pb.Command_Register{Register: registration(1)}, Time: 7},
	}})
	if err != nil {
		t.Fatal(err)
	}
	msgs = append(msgs, batch, append(batch[:len(batch):len(batch)], 0x10, 0x01), batch[:len(batch)-3]) // with a field it does not know; cut short

	codec := newRegistryCodec()
	for _, b := range msgs {
		for _, newMsg := range []func() proto.Message{
			func() proto.Message { return &pb.RegisterRequest{} },
			func() proto.Message { return &pb.Command{} },
			func() proto.Message { return &pb.ApplyBatchRequest{} },
		} {
			want, got := newMsg(), newMsg()
			wantErr := proto.Unmarshal(b, want)
			err := codec.Unmarshal(inPieces(b), got)
			if err == nil {
				err = undecodable(got) // the codec marks what it could not decode
			}
			switch {
			case (err != nil) != (wantErr != nil):
				t.Fatalf("%T from %x: error %v, protobuf's %v", got, b, err, wantErr)
			case err != nil && !errors.Is(err, apierr.ErrInvalidArgument):
				t.Fatalf("%T from %x: error %v, want InvalidArgument", got, b, err)
			case err == nil && !proto.Equal(got, want):
				t.Fatalf("%T from %x:\n got %v\nwant %v", got, b, got, want)
			}
		}
	}
}

func TestRegistryCodecEncodesRegisterResponsesAsProtobufDoes(t *testing.T) {
	header := &pb.ResponseHeader{Revision: 42, ServedBy: "z1"}
	withUnknown := &pb.RegisterResponse{Header: header, Instance: registration(2)}
	withUnknown.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 7))
	codec := newRegistryCodec()
	for _, resp := range []*pb.RegisterResponse{
		{Header: header, Instance: registration(0)},
		{Header: header, Instance: registration(1)},
		{Header: header, Instance: registration(5)},
		{Instance: registration(3)},
		{Header: header},
		withUnknown,
	} {
		before := proto.Clone(resp)
		data, err := codec.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		// One with fields the agent does not know goes to protobuf as is.
		if len(resp.ProtoReflect().GetUnknown()) == 0 && !bytes.Equal(data.Materialize(), want) {
			t.Fatalf("encoded %v\n as %x\nwant %x", resp, data.Materialize(), want)
		}
		got := &pb.RegisterResponse{}
		if err := proto.Unmarshal(data.Materialize(), got); err != nil {
			t.Fatalf("decode the encoding of %v: %v", resp, err)
		}
		if !proto.Equal(got, resp) {
			t.Fatalf("encoded %v, decoded %v", resp, got)
		}
		if !proto.Equal(resp, before) {
			t.Fatalf("encoding changed the response: %v, was %v", resp, before)
		}
	}
}
