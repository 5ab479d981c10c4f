package client

import (
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/instcodec"
	"github.com/zrpcio/zrpc/internal/wirecodec"
)

// registryCodec is the codec of the client's connections to agents
// (internal/wirecodec), except that a registration is encoded and its
// answer decoded as the agents do it, by internal/instcodec: the
// RegisterRequest's instance without protobuf's reflection over its
// metadata map (which copies and sorts nothing here, but takes a value
// and an interface for every key and value), and the RegisterResponse's
// instance likewise. The bytes are protobuf's, the request's in
// deterministic order; the request is only read, so a caller may read
// its instance meanwhile.
type registryCodec struct{ wirecodec.Codec }

// Field numbers of RegisterRequest.instance and RegisterResponse.instance.
var (
	registerRequestInstance  = (&zrpcpb.RegisterRequest{}).ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name("instance")).Number()
	registerResponseInstance = (&zrpcpb.RegisterResponse{}).ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name("instance")).Number()
)

func (c registryCodec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*zrpcpb.RegisterRequest)
	if !ok || r.Instance == nil || len(r.ProtoReflect().GetUnknown()) > 0 {
		return c.Codec.Marshal(v)
	}
	// Every field of the request but its instance
	// (TestRegistryCodecKnowsEveryFieldOfARegisterRequest).
	head := &zrpcpb.RegisterRequest{RequestId: r.RequestId}
	b, err := instcodec.AppendMessage(nil, head, registerRequestInstance, r.Instance)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (c registryCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*zrpcpb.RegisterResponse)
	if !ok {
		return c.Codec.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(wirecodec.BufferPool())
	defer buf.Free()
	return instcodec.DecodeMessageWithInstance(buf.ReadOnlyData(), r, registerResponseInstance, func(inst *zrpcpb.Instance) { r.Instance = inst })
}
