package node

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func TestMalformedDurationsAreRejectedNamingTheField(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, c := dial(t, n.GRPCAddr())
	ctx := ctxT(t)
	tests := []struct {
		name  string
		check *pb.Check
		field string
	}{
		{"ttl nanos past a second", &pb.Check{Ttl: &durationpb.Duration{Seconds: 10, Nanos: 2_000_000_000}}, "instance.check.ttl"},
		{"ttl signs disagree", &pb.Check{Ttl: &durationpb.Duration{Seconds: 10, Nanos: -1}}, "instance.check.ttl"},
		{"unused interval", &pb.Check{Ttl: durationpb.New(10e9), Interval: &durationpb.Duration{Nanos: -2_000_000_000}}, "instance.check.interval"},
		{"grpc timeout", &pb.Check{Grpc: true, Interval: durationpb.New(1e9), Timeout: &durationpb.Duration{Seconds: 1, Nanos: 1_000_000_000}}, "instance.check.timeout"},
		{"deregister after", &pb.Check{Ttl: durationpb.New(10e9), DeregisterCriticalAfter: &durationpb.Duration{Seconds: 1 << 62}}, "instance.check.deregister_critical_after"},
	}
	for _, tt := range tests {
		in := inst("user.rpc", "u1", "127.0.0.1:9001")
		in.Check = tt.check
		_, err := c.Register(ctx, &pb.RegisterRequest{Instance: in})
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.field+":") {
			t.Errorf("%s: Register = %v, want InvalidArgument naming %s", tt.name, err, tt.field)
		}
		// Through a session too: it validates the instance itself.
		stream, err := c.Session(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&pb.SessionRequest{Seq: 1, Kind: &pb.SessionRequest_Open{Open: &pb.SessionOpen{Owner: "test"}}})
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		stream.Send(&pb.SessionRequest{Seq: 2, Kind: &pb.SessionRequest_Register{Register: &pb.RegisterRequest{Instance: in}}})
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Error == nil || codes.Code(resp.Error.Code) != codes.InvalidArgument || !strings.Contains(resp.Error.Message, tt.field+":") {
			t.Errorf("%s: session register = %v, want InvalidArgument naming %s", tt.name, resp.Error, tt.field)
		}
		stream.CloseSend()
	}
	// A forwarded register is checked as well.
	fwd := &pb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9001", Node: "n1",
		Check: &pb.Check{Ttl: &durationpb.Duration{Seconds: 10, Nanos: 2_000_000_000}}}
	conn, _ := dial(t, n.GRPCAddr())
	_, err := pb.NewInternalClient(conn).Apply(ctx, &pb.Command{Kind: &pb.Command_Register{Register: fwd}})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "register.check.ttl:") {
		t.Errorf("forwarded register = %v, want InvalidArgument naming register.check.ttl", err)
	}
	resp, err := c.Get(ctx, &pb.GetRequest{Service: "user.rpc"})
	if err != nil || len(resp.Instances) != 0 {
		t.Fatalf("Get after rejected registrations = %v, %v; want none", resp, err)
	}
	// What is accepted can be written as JSON, as `service get -o json` does.
	in := inst("user.rpc", "u1", "127.0.0.1:9001")
	in.Check = &pb.Check{Ttl: &durationpb.Duration{Seconds: 10, Nanos: 999_999_999}}
	if _, err := c.Register(ctx, &pb.RegisterRequest{Instance: in}); err != nil {
		t.Fatal(err)
	}
	resp, err = c.Get(ctx, &pb.GetRequest{Service: "user.rpc"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := protojson.Marshal(resp); err != nil {
		t.Fatalf("Get answer is not JSON-encodable: %v", err)
	}
}
