package node

import (
	"slices"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/instcodec"
	"github.com/zrpcio/zrpc/internal/wirecodec"
)

// peerCodec is the codec of this agent's connections to its peers
// (internal/wirecodec), except that the writes a follower forwards to
// its leader, one Command or a batch of them, are encoded with
// instcodec.EncodeCommand: without protobuf's reflection over the
// instance's metadata map, the same message. A command is only read: a
// forwarder may encode it again for a retry while its caller reads it.
type peerCodec struct{ wirecodec.Codec }

// applyBatchCommands is the field number of ApplyBatchRequest.commands.
var applyBatchCommands = (&pb.ApplyBatchRequest{}).ProtoReflect().Descriptor().Fields().ByName("commands").Number()

func (c peerCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *pb.Command:
		b, err := instcodec.EncodeCommand(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	case *pb.ApplyBatchRequest:
		if len(m.ProtoReflect().GetUnknown()) > 0 || slices.Contains(m.Commands, nil) {
			break
		}
		var b []byte
		for _, cmd := range m.Commands {
			enc, err := instcodec.EncodeCommand(cmd)
			if err != nil {
				return nil, err
			}
			b = protowire.AppendTag(b, applyBatchCommands, protowire.BytesType)
			b = protowire.AppendBytes(b, enc)
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return c.Codec.Marshal(v)
}
