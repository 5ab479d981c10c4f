package grpcapi

import (
	"strings"
	"testing"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func TestCheckTimesNamesTheFieldPathThroughLists(t *testing.T) {
	bad := &pb.Instance{Service: "s", Id: "b", Check: &pb.Check{Ttl: &durationpb.Duration{Seconds: 1, Nanos: -1}}}
	resp := &pb.WatchResponse{Events: []*pb.Event{{Instance: &pb.Instance{Service: "s", Id: "a"}}, {Instance: bad}}}
	err := checkTimes(resp.ProtoReflect(), "watch")
	if st := status.Convert(apierr.ToStatus(err)); err == nil || !strings.Contains(st.Message(), "watch.events[1].instance.check.ttl:") {
		t.Fatalf("checkTimes = %v, want InvalidArgument naming watch.events[1].instance.check.ttl", err)
	}
	if err := checkTimes((&pb.WatchResponse{Events: []*pb.Event{{Instance: &pb.Instance{Id: "a"}}}}).ProtoReflect(), ""); err != nil {
		t.Fatalf("well-formed: %v", err)
	}
}
