package grpcapi

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/instcodec"
	"github.com/zrpcio/zrpc/internal/wirecodec"
)

// registryCodec is the agent's gRPC codec (watchCodec), except that the
// messages every registration passes through skip protobuf's reflection
// over the instance's metadata map: it decodes the two requests it
// arrives in, a client's RegisterRequest and, on the leader, a
// follower's forwarded Command or batch of them, with internal/instcodec
// (eleven allocations fewer for an instance of four metadata entries),
// and encodes the RegisterResponse with it. The bytes are those of the same
// messages.
type registryCodec struct {
	encoding.CodecV2
}

func newRegistryCodec() registryCodec { return registryCodec{newWatchCodec()} }

// Marshal encodes a RegisterResponse with instcodec.EncodeRegisterResponse; any
// other message as watchCodec does. The response is only read: its
// instance may be one that others read too.
func (c registryCodec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*pb.RegisterResponse)
	if !ok || r.Instance == nil || len(r.ProtoReflect().GetUnknown()) > 0 {
		return c.CodecV2.Marshal(v)
	}
	b, err := instcodec.EncodeRegisterResponse(r)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

// Unmarshal decodes a request; bytes that are not one leave v marked
// undecodable (markUndecodable) for the interceptors to refuse.
func (c registryCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if err := c.unmarshal(data, v); err != nil {
		return markUndecodable(v, err)
	}
	return nil
}

func (c registryCodec) unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *pb.RegisterRequest:
		return wirecodec.DecodeWith(data, func(b []byte) error { return instcodec.DecodeRegisterRequest(b, m) })
	case *pb.Command:
		return wirecodec.DecodeWith(data, func(b []byte) error { return instcodec.DecodeCommand(b, m) })
	case *pb.ApplyBatchRequest:
		return wirecodec.DecodeWith(data, func(b []byte) error { return instcodec.DecodeApplyBatch(b, m) })
	}
	return c.CodecV2.Unmarshal(data, v)
}
