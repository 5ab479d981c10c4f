package node

import (
	"google.golang.org/grpc/mem"

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

func (c peerCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *pb.Command:
		b, err := instcodec.EncodeCommand(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	case *pb.ApplyBatchRequest:
		b, ok, err := instcodec.EncodeApplyBatch(m)
		if err != nil {
			return nil, err
		}
		if ok {
			return mem.BufferSlice{mem.SliceBuffer(b)}, nil
		}
	}
	return c.Codec.Marshal(v)
}
