package grpcapi

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// FuzzValidateInstance builds a registration from arbitrary fields: the
// validator never panics; it rejects with InvalidArgument naming an
// instance field; and what it accepts, the registry's state machine stores
// as sent.
//
//	go test -run '^$' -fuzz FuzzValidateInstance ./node/grpcapi/
func FuzzValidateInstance(f *testing.F) {
	f.Add("user.rpc", "u-1", "10.0.0.1:8080", uint32(0), "z1", "v1", "tag", "key", "value", int64(0), false, int64(0))
	f.Add("a", "b", "[::1]:1", uint32(10000), "", "", "", "k/x", "", int64(time.Second), false, int64(time.Minute))
	f.Add("svc", "id", "host:65535", uint32(1), "", "", "t", "", "", int64(0), true, int64(100*time.Millisecond))
	f.Add("-bad", "id", "host", uint32(10001), "zone!", strings.Repeat("v", 200), "", "", "", int64(-1), true, int64(0))
	f.Add("s", "i", "h:0", uint32(5), "z", "", "", "ключ", strings.Repeat("x", 2000), int64(25*time.Hour), false, int64(0))
	f.Fuzz(func(t *testing.T, service, id, address string, weight uint32, zone, version, tag, key, value string,
		ttl int64, grpc bool, interval int64) {
		in := &pb.Instance{Service: service, Id: id, Address: address, Weight: weight, Zone: zone, Version: version}
		if tag != "" {
			in.Tags = []string{tag}
		}
		if key != "" {
			in.Metadata = map[string]string{key: value}
		}
		switch {
		case ttl != 0:
			in.Check = &pb.Check{Ttl: durationpb.New(time.Duration(ttl)), Grpc: grpc}
		case grpc:
			in.Check = &pb.Check{Grpc: true, Interval: durationpb.New(time.Duration(interval))}
		}
		if _, err := proto.Marshal(in); err != nil {
			return // not valid protobuf (a string that is not UTF-8): gRPC refuses it before the validator
		}
		err := validateInstance(in)
		if err != nil {
			if !errors.Is(err, apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), "instance") {
				t.Fatalf("rejection %q is not an InvalidArgument naming an instance field", err)
			}
			return
		}
		stored := proto.Clone(in).(*pb.Instance)
		stored.Node, stored.Health = "n1", pb.Health_PASSING
		data, merr := proto.Marshal(&pb.Command{Kind: &pb.Command_Register{Register: stored}, Time: 1})
		if merr != nil {
			t.Fatalf("marshal an accepted instance: %v", merr)
		}
		fsm := raftstore.NewFSM(4)
		if resp := fsm.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data}); resp != nil {
			if rerr, ok := resp.(error); ok {
				t.Fatalf("the API accepted %v but the state machine rejects it: %v", in, rerr)
			}
		}
		got := fsm.Instance(service, id)
		if got == nil || got.Address != address || got.Weight != in.Weight || !reflect.DeepEqual(got.Metadata, in.Metadata) {
			t.Fatalf("accepted %v, stored %v", in, got)
		}
	})
}
