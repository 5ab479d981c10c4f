package client

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// registration is an instance as services register it, with n metadata
// entries.
func registration(n int) *zrpcpb.Instance {
	inst := &zrpcpb.Instance{
		Id: "i1", Service: "user.rpc", Address: "127.0.0.1:9000", Weight: 100, Zone: "zone-a", Version: "v1",
		Tags: []string{"primary", ""}, Check: &zrpcpb.Check{Ttl: durationpb.New(30e9)},
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

var deterministic = proto.MarshalOptions{Deterministic: true}

func TestRegistryCodecEncodesRegisterRequestsAsProtobufDoes(t *testing.T) {
	withUnknown := &zrpcpb.RegisterRequest{Instance: registration(2), RequestId: "r"}
	withUnknown.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 7))
	reqs := []*zrpcpb.RegisterRequest{{}, {RequestId: "r"}, withUnknown}
	for n := range 6 {
		reqs = append(reqs, &zrpcpb.RegisterRequest{Instance: registration(n), RequestId: newRequestID()},
			&zrpcpb.RegisterRequest{Instance: registration(n)})
	}
	for _, req := range reqs {
		before := proto.Clone(req)
		data, err := registryCodec{}.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		want, err := deterministic.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		got := data.Materialize()
		// One with fields this client does not know goes to protobuf as is.
		if len(req.ProtoReflect().GetUnknown()) == 0 && !bytes.Equal(got, want) {
			t.Fatalf("encoded %v\n as %x\nwant %x", req, got, want)
		}
		back := &zrpcpb.RegisterRequest{}
		if err := proto.Unmarshal(got, back); err != nil || !proto.Equal(back, req) {
			t.Fatalf("encoded %v, decoded %v (%v)", req, back, err)
		}
		if !proto.Equal(req, before) {
			t.Fatalf("encoding changed the request: %v, was %v", req, before)
		}
	}
	if _, err := (registryCodec{}).Marshal(&zrpcpb.RegisterRequest{Instance: &zrpcpb.Instance{Metadata: map[string]string{"k": "\xff"}}}); err == nil {
		t.Error("a request with metadata that is not UTF-8 was encoded")
	}
}

// inPieces is b as gRPC may hand it to a codec: in several buffers.
func inPieces(b []byte) mem.BufferSlice {
	if len(b) < 2 {
		return mem.BufferSlice{mem.SliceBuffer(b)}
	}
	return mem.BufferSlice{mem.SliceBuffer(b[:len(b)/2]), mem.SliceBuffer(b[len(b)/2:])}
}

func TestRegistryCodecDecodesRegisterResponsesAsProtobufDoes(t *testing.T) {
	var msgs [][]byte
	for n := range 5 {
		b, err := proto.Marshal(&zrpcpb.RegisterResponse{Header: &zrpcpb.ResponseHeader{Revision: 42, ServedBy: "z1"}, Instance: registration(n)})
		if err != nil {
			t.Fatal(err)
		}
		unknown := protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 7)
		msgs = append(msgs, b, append(slices.Clip(b), unknown...), append(slices.Clip(b), b...), b[:len(b)-3]) // with an unknown field; twice over (merged); cut short
	}
	msgs = append(msgs, nil, []byte{0x12, 0x05, 0x0a}) // empty; cut short
	for _, b := range msgs {
		want, got := &zrpcpb.RegisterResponse{}, &zrpcpb.RegisterResponse{}
		wantErr := proto.Unmarshal(b, want)
		err := registryCodec{}.Unmarshal(inPieces(b), got)
		switch {
		case (err != nil) != (wantErr != nil):
			t.Fatalf("RegisterResponse from %x: error %v, protobuf's %v", b, err, wantErr)
		case err == nil && !proto.Equal(got, want):
			t.Fatalf("RegisterResponse from %x:\n got %v\nwant %v", b, got, want)
		}
	}
}

// recordingCodec is an agent's side of the wire for the test below: it
// keeps the bytes of every RegisterRequest it receives.
type recordingCodec struct {
	encoding.CodecV2
	mu   sync.Mutex
	reqs [][]byte
}

func (c *recordingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if _, ok := v.(*zrpcpb.RegisterRequest); ok {
		c.mu.Lock()
		c.reqs = append(c.reqs, data.Materialize())
		c.mu.Unlock()
	}
	return c.CodecV2.Unmarshal(data, v)
}

// echoRegistry answers a Register with the registered instance.
type echoRegistry struct {
	zrpcpb.UnimplementedRegistryServer
}

func (echoRegistry) Register(_ context.Context, req *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error) {
	return &zrpcpb.RegisterResponse{Header: &zrpcpb.ResponseHeader{Revision: 7, ServedBy: "a1"}, Instance: req.Instance}, nil
}

// A Client's Register sends the request in protobuf's deterministic
// encoding (the instance's metadata in key order, as instcodec writes it,
// where protobuf's default codec writes a map in Go's random order) and
// reads the answer's instance back whole.
func TestClientRegistersThroughTheRegistryCodec(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	codec := &recordingCodec{CodecV2: encoding.GetCodecV2("proto")}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(codec))
	zrpcpb.RegisterRegistryServer(srv, echoRegistry{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	c := newTestClient(t, lis.Addr().String())

	var sent []*zrpcpb.Instance
	for i := range 5 {
		inst := registration(20)
		inst.Id = fmt.Sprint("i", i)
		got, rev, err := c.Register(testContext(t), inst)
		if err != nil {
			t.Fatal(err)
		}
		if rev != 7 || !proto.Equal(got, inst) {
			t.Fatalf("Register(%v) answered %v at %d, want it back at 7", inst, got, rev)
		}
		sent = append(sent, inst)
	}
	codec.mu.Lock()
	defer codec.mu.Unlock()
	if len(codec.reqs) != len(sent) {
		t.Fatalf("agent received %d registrations, want %d", len(codec.reqs), len(sent))
	}
	for i, b := range codec.reqs {
		req := &zrpcpb.RegisterRequest{}
		if err := proto.Unmarshal(b, req); err != nil {
			t.Fatal(err)
		}
		want, err := deterministic.Marshal(&zrpcpb.RegisterRequest{Instance: sent[i], RequestId: req.RequestId})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, want) {
			t.Fatalf("registration %d sent as %x\nwant %x", i, b, want)
		}
	}
}
