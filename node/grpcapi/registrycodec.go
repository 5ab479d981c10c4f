package grpcapi

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/instcodec"
	"github.com/zrpcio/zrpc/internal/wirecodec"
)

// registryCodec is the agent's gRPC codec (watchCodec), except that the
// messages every registration passes through skip protobuf's reflection
// over the instance's metadata map: it decodes the two requests it
// arrives in, a client's RegisterRequest and, on the leader, a
// follower's forwarded Command or batch of them, with
// instcodec.DecodeInstance (eleven allocations fewer for an instance of
// four metadata entries), and encodes the RegisterResponse with
// instcodec.AppendMessage. The bytes are those of the same
// messages.
type registryCodec struct {
	encoding.CodecV2
}

func newRegistryCodec() registryCodec { return registryCodec{newWatchCodec()} }

// Field numbers of RegisterRequest.instance and RegisterResponse.instance.
var (
	registerRequestInstance  = (&pb.RegisterRequest{}).ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name("instance")).Number()
	registerResponseInstance = (&pb.RegisterResponse{}).ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name("instance")).Number()
)

// Marshal encodes a RegisterResponse with instcodec.AppendMessage; any
// other message as watchCodec does. The response is only read: its
// instance may be one that others read too.
func (c registryCodec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*pb.RegisterResponse)
	if !ok || r.Instance == nil || len(r.ProtoReflect().GetUnknown()) > 0 {
		return c.CodecV2.Marshal(v)
	}
	// Every field of the response but its instance
	// (TestRegistryCodecKnowsEveryFieldOfARegisterResponse).
	head := &pb.RegisterResponse{Header: r.Header}
	b, err := instcodec.AppendMessage(nil, head, registerResponseInstance, r.Instance)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (c registryCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *pb.RegisterRequest:
		buf := data.MaterializeToBuffer(wirecodec.BufferPool())
		defer buf.Free()
		return instcodec.DecodeMessageWithInstance(buf.ReadOnlyData(), m, registerRequestInstance, func(inst *pb.Instance) { m.Instance = inst })
	case *pb.Command:
		buf := data.MaterializeToBuffer(wirecodec.BufferPool())
		defer buf.Free()
		return instcodec.DecodeCommand(buf.ReadOnlyData(), m)
	case *pb.ApplyBatchRequest:
		buf := data.MaterializeToBuffer(wirecodec.BufferPool())
		defer buf.Free()
		return decodeApplyBatch(buf.ReadOnlyData(), m)
	}
	return c.CodecV2.Unmarshal(data, v)
}

// applyBatchCommands is the field number of ApplyBatchRequest.commands.
var applyBatchCommands = (&pb.ApplyBatchRequest{}).ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name("commands")).Number()

// decodeApplyBatch decodes a follower's batch of forwarded writes into m,
// which it resets, each command with instcodec.DecodeCommand. A batch
// with fields other than its commands is decoded by protobuf alone.
func decodeApplyBatch(enc []byte, m *pb.ApplyBatchRequest) error {
	proto.Reset(m)
	for b := enc; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != applyBatchCommands || typ != protowire.BytesType {
			return proto.Unmarshal(enc, m)
		}
		v, l := protowire.ConsumeBytes(b[n:])
		if l < 0 {
			return proto.Unmarshal(enc, m)
		}
		cmd := &pb.Command{}
		if err := instcodec.DecodeCommand(v, cmd); err != nil {
			return err
		}
		m.Commands = append(m.Commands, cmd)
		b = b[n+l:]
	}
	return nil
}
