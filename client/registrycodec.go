package client

import (
	"google.golang.org/grpc/mem"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/instcodec"
	"github.com/zrpcio/zrpc/internal/wirecodec"
)

// registryCodec is the codec of the client's connections to agents
// (internal/wirecodec), except that a registration is encoded and its
// answer (and a Get's) decoded as the agents do it, by internal/instcodec: the
// RegisterRequest's instance without protobuf's reflection over its
// metadata map (which copies and sorts nothing here, but takes a value
// and an interface for every key and value), and the RegisterResponse's
// instance likewise. The bytes are protobuf's, the request's in
// deterministic order; the request is only read, so a caller may read
// its instance meanwhile.
type registryCodec struct{ wirecodec.Codec }

func (c registryCodec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*zrpcpb.RegisterRequest)
	if !ok || r.Instance == nil || len(r.ProtoReflect().GetUnknown()) > 0 {
		return c.Codec.Marshal(v)
	}
	b, err := instcodec.EncodeRegisterRequest(r)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

// Unmarshal decodes a RegisterResponse or a GetResponse with instcodec,
// anything else as wirecodec does.
func (c registryCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch r := v.(type) {
	case *zrpcpb.RegisterResponse:
		return wirecodec.DecodeWith(data, func(b []byte) error { return instcodec.DecodeRegisterResponse(b, r) })
	case *zrpcpb.GetResponse:
		return wirecodec.DecodeWith(data, func(b []byte) error { return instcodec.DecodeGetResponse(b, r) })
	}
	return c.Codec.Unmarshal(data, v)
}
