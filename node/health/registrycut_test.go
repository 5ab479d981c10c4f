package health

import (
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// TestACheckCountsTheOutputAFullRegistryCutAsItsOwn: a registry at
// max_registry_bytes stores a check's output cut; the check does not
// take the cut output for someone else's and write its own again at
// every run, a Raft write per instance per interval.
func TestACheckCountsTheOutputAFullRegistryCutAsItsOwn(t *testing.T) {
	reg := newFakeRegistry()
	reg.full = true
	k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
	addr, hs := grpctest.StartHealthServer(t)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	check := &pb.Check{Grpc: true, Interval: durationpb.New(20 * time.Millisecond), Timeout: durationpb.New(time.Second)}
	reg.registerAwaiting(&pb.Instance{Service: "checked.rpc", Id: "i1", Node: "a1", Address: addr, Check: check})
	runLoop(t, k.RunChecks)
	testwait.For(t, 10*time.Second, "the first check's result, cut", func() bool {
		return strings.HasSuffix(reg.Instance("checked.rpc", "i1").GetHealthOutput(), RegistryCutMark)
	})
	reg.written()
	// The server stays down: twenty more runs of the check, same result.
	from := reg.reads.Load()
	testwait.For(t, 10*time.Second, "twenty runs of the check", func() bool { return reg.reads.Load() >= from+20 })
	if n := len(reg.written()); n != 0 {
		t.Fatalf("%d more health writes for a server that stayed down, its output cut by the registry; want none within %s", n, outputRefresh)
	}
	if h := reg.health("checked.rpc", "i1"); h != pb.Health_CRITICAL {
		t.Fatalf("health %v, want critical", h)
	}
}

func TestCutOf(t *testing.T) {
	for _, tc := range []struct {
		stored, output string
		want           bool
	}{
		{"down", "down", true},
		{"gRPC healt" + RegistryCutMark, "gRPC health check: NOT_SERVING", true},
		{RegistryCutMark, "gRPC health check: NOT_SERVING", true},
		{"gRPC healt" + RegistryCutMark, "connection refused", false},
		{"down", "down again", false},
		{"x" + RegistryCutMark, "x", false},
	} {
		if got := cutOf(tc.stored, tc.output); got != tc.want {
			t.Errorf("cutOf(%q, %q) = %v, want %v", tc.stored, tc.output, got, tc.want)
		}
	}
}
