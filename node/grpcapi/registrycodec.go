package grpcapi

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/wirecodec"
	"github.com/zrpcio/zrpc/raftstore"
)

// registryCodec is the agent's gRPC codec (watchCodec), except that it
// decodes the two requests every registration arrives in, a client's
// RegisterRequest and, on the leader, a follower's forwarded Command,
// with the instance's metadata map read by raftstore.DecodeInstance
// instead of protobuf's reflection over it: the same message, with
// eleven allocations fewer for an instance of four metadata entries.
type registryCodec struct {
	encoding.CodecV2
}

func newRegistryCodec() registryCodec { return registryCodec{newWatchCodec()} }

// registerRequestInstance is the field number of RegisterRequest.instance.
var registerRequestInstance = protowire.Number((&pb.RegisterRequest{}).ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name("instance")).Number())

func (c registryCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *pb.RegisterRequest:
		buf := data.MaterializeToBuffer(wirecodec.BufferPool())
		defer buf.Free()
		return raftstore.DecodeMessageWithInstance(buf.ReadOnlyData(), m, registerRequestInstance, func(inst *pb.Instance) { m.Instance = inst })
	case *pb.Command:
		buf := data.MaterializeToBuffer(wirecodec.BufferPool())
		defer buf.Free()
		return raftstore.DecodeCommand(buf.ReadOnlyData(), m)
	}
	return c.CodecV2.Unmarshal(data, v)
}
