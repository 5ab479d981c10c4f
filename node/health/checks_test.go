package health

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// TestChecksFollowTheInstancesGRPCHealth: the owning agent's checker writes
// an instance passing when grpc.health.v1 answers SERVING and critical when
// it does not; another agent's instance is not checked from here.
func TestChecksFollowTheInstancesGRPCHealth(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := grpchealth.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)

	reg := newFakeRegistry()
	k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
	check := &pb.Check{Grpc: true, Interval: durationpb.New(50 * time.Millisecond), Timeout: durationpb.New(time.Second)}
	for _, owner := range []string{"a1", "a2"} {
		reg.register(&pb.Instance{Service: "checked.rpc", Id: owner, Node: owner, Address: ln.Addr().String(), Check: check})
		reg.insts[instanceKey{"checked.rpc", owner}].Health = pb.Health_CRITICAL
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.RunChecks(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })

	waitHealth := func(want pb.Health) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for reg.health("checked.rpc", "a1") != want {
			if time.Now().After(deadline) {
				t.Fatalf("instance health stayed %v, want %v", reg.health("checked.rpc", "a1"), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitHealth(pb.Health_PASSING)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	waitHealth(pb.Health_CRITICAL)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	waitHealth(pb.Health_PASSING)
	if h := reg.health("checked.rpc", "a2"); h != pb.Health_CRITICAL {
		t.Fatalf("another agent's instance was checked from here: %v", h)
	}
}
