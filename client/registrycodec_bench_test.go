package client

import (
	"testing"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/benchutil"
	"github.com/zrpcio/zrpc/internal/wirecodec"
)

// BenchmarkRegisterCodec is the client's side of one registration on the
// wire: its request encoded, its answer decoded, by the client's codec
// and by wirecodec alone (protobuf's reflection over the metadata map).
func BenchmarkRegisterCodec(b *testing.B) {
	inst := benchutil.Instance(1)
	inst.Check = &zrpcpb.Check{Ttl: durationpb.New(30e9)}
	req := &zrpcpb.RegisterRequest{Instance: inst, RequestId: newRequestID()}
	stored := proto.Clone(inst).(*zrpcpb.Instance)
	stored.CreateRevision, stored.ModRevision, stored.HealthSince = 7, 7, 1<<60
	resp, err := proto.MarshalOptions{Deterministic: true}.Marshal(&zrpcpb.RegisterResponse{
		Header: &zrpcpb.ResponseHeader{Revision: 7, ServedBy: "agent-1"}, Instance: stored,
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		codec encoding.CodecV2
	}{{"client", registryCodec{}}, {"wirecodec", wirecodec.Codec{}}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				data, err := c.codec.Marshal(req)
				if err != nil {
					b.Fatal(err)
				}
				data.Free()
				if err := c.codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(resp)}, &zrpcpb.RegisterResponse{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
