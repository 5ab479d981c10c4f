package instcodec

import (
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/benchutil"
)

// benchRegistration is the benchmarks' registration: the typical one, with
// a TTL check and the leader's stamps.
func benchRegistration() *pb.Command {
	inst := benchutil.Instance(1)
	inst.Check = &pb.Check{Ttl: durationpb.New(30e9)}
	return &pb.Command{Kind: &pb.Command_Register{Register: inst}, RequestId: "0123456789abcdef0123456789abcdef", Time: 1 << 60}
}

// BenchmarkEncodeRegistration encodes a registration's entry, as the
// leader does for every write (and a follower for every forward).
func BenchmarkEncodeRegistration(b *testing.B) {
	cmd := benchRegistration()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeCommand(cmd); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeRegisteredInstance encodes a registration's instance as
// a field, as an agent's answer to it does.
func BenchmarkEncodeRegisteredInstance(b *testing.B) {
	inst := benchRegistration().GetRegister()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := AppendInstanceField(nil, 2, inst); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeRegistration decodes a registration's entry, as every
// replica does for every write.
func BenchmarkDecodeRegistration(b *testing.B) {
	enc, err := EncodeCommand(benchRegistration())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := DecodeCommand(enc, &pb.Command{}); err != nil {
			b.Fatal(err)
		}
	}
}
