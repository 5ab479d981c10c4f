package node

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// wantQuotaError fails unless err is ResourceExhausted naming the limit and
// its flag.
func wantQuotaError(t *testing.T, what string, err error, key string) {
	t.Helper()
	st := status.Convert(err)
	flag := "--" + strings.ReplaceAll(key, "_", "-")
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), key) || !strings.Contains(st.Message(), flag) {
		t.Fatalf("%s: %v, want ResourceExhausted naming %s and %s", what, err, key, flag)
	}
}

func TestQuotaInstancesPerService(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxInstancesPerService = 3
	n := startNode(t, cfg)
	_, c := dial(t, n.GRPCAddr())
	ctx := ctxT(t)
	register := func(svc, id string) error {
		_, err := c.Register(ctx, &pb.RegisterRequest{Instance: inst(svc, id, "127.0.0.1:9001")})
		return err
	}
	for i := range 3 {
		if err := register("user.rpc", fmt.Sprint("u", i)); err != nil {
			t.Fatal(err)
		}
	}
	wantQuotaError(t, "fourth instance", register("user.rpc", "u3"), "max_instances_per_service")
	if got := len(getInstances(t, c, "user.rpc")); got != 3 {
		t.Fatalf("user.rpc has %d instances after a refused registration, want 3", got)
	}
	// Updating an instance is not a new one; other services have their own count.
	if err := register("user.rpc", "u0"); err != nil {
		t.Fatalf("re-register u0: %v", err)
	}
	if err := register("order.rpc", "o0"); err != nil {
		t.Fatalf("another service: %v", err)
	}
	// A removed instance frees its place.
	if _, err := c.Deregister(ctx, &pb.DeregisterRequest{Service: "user.rpc", Id: "u1"}); err != nil {
		t.Fatal(err)
	}
	if err := register("user.rpc", "u3"); err != nil {
		t.Fatalf("after a deregistration: %v", err)
	}
}

func TestQuotaInstancesPerSession(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxInstancesPerSession = 2
	n := startNode(t, cfg)
	_, c := dial(t, n.GRPCAddr())
	stream, err := c.Session(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	send := func(req *pb.SessionRequest) *pb.SessionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	send(&pb.SessionRequest{Seq: 1, Kind: &pb.SessionRequest_Open{Open: &pb.SessionOpen{Owner: "test"}}})
	reg := func(seq uint64, id string) *pb.SessionResponse {
		return send(&pb.SessionRequest{Seq: seq, Kind: &pb.SessionRequest_Register{
			Register: &pb.RegisterRequest{Instance: inst("user.rpc", id, "127.0.0.1:9001")}}})
	}
	for i, id := range []string{"s0", "s1", "s0"} {
		if r := reg(uint64(2+i), id); r.Error != nil {
			t.Fatalf("register %s: %v", id, r.Error)
		}
	}
	r := reg(9, "s2")
	if r.Error == nil || codes.Code(r.Error.Code) != codes.ResourceExhausted ||
		!strings.Contains(r.Error.Message, "max_instances_per_session") || !strings.Contains(r.Error.Message, "--max-instances-per-session") {
		t.Fatalf("third instance of the session: %v, want ResourceExhausted naming max_instances_per_session", r.Error)
	}
	if r.Error.Reason != apierr.Code(apierr.ErrQuotaExceeded) {
		t.Errorf("session error reason %q, want %q", r.Error.Reason, apierr.Code(apierr.ErrQuotaExceeded))
	}
	// Outside the session, the service takes more.
	if _, err := c.Register(ctxT(t), &pb.RegisterRequest{Instance: inst("user.rpc", "free", "127.0.0.1:9001")}); err != nil {
		t.Fatalf("register without a session: %v", err)
	}
	if got := len(getInstances(t, c, "user.rpc")); got != 3 {
		t.Fatalf("user.rpc has %d instances, want 3", got)
	}
}

func TestQuotaInstanceMetadataBytes(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxInstanceMetadataBytes = 100
	n := startNode(t, cfg)
	_, c := dial(t, n.GRPCAddr())
	ctx := ctxT(t)
	in := inst("user.rpc", "u1", "127.0.0.1:9001")
	in.Version = strings.Repeat("v", 40)
	in.Tags = []string{strings.Repeat("t", 30)}
	in.Metadata = map[string]string{"k": strings.Repeat("m", 29)} // 40+30+1+29 = 100: at the limit
	if _, err := c.Register(ctx, &pb.RegisterRequest{Instance: in}); err != nil {
		t.Fatalf("instance at the limit: %v", err)
	}
	in.Metadata["k2"] = "x"
	_, err := c.Register(ctx, &pb.RegisterRequest{Instance: in})
	wantQuotaError(t, "instance past the limit", err, "max_instance_metadata_bytes")
	if got := getInstances(t, c, "user.rpc"); len(got) != 1 || len(got[0].Metadata) != 1 {
		t.Fatalf("a refused update changed the instance: %v", got)
	}
}

func TestQuotaRegistryBytes(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxRegistryBytes = 2000
	n := startNode(t, cfg)
	_, c := dial(t, n.GRPCAddr())
	ctx := ctxT(t)
	var err error
	registered := 0
	for i := 0; i < 100 && err == nil; i++ {
		in := inst("user.rpc", fmt.Sprint("u", i), "127.0.0.1:9001")
		in.Metadata = map[string]string{"pad": strings.Repeat("p", 100)}
		if _, err = c.Register(ctx, &pb.RegisterRequest{Instance: in}); err == nil {
			registered++
		}
	}
	wantQuotaError(t, "registration past the registry's size", err, "max_registry_bytes")
	if registered == 0 || registered > 15 {
		t.Fatalf("%d instances of ~130 bytes fit in 2000 bytes", registered)
	}
	if b := n.Store().FSM().RegistryBytes(); b > cfg.MaxRegistryBytes {
		t.Fatalf("registry holds %d bytes, past its limit %d", b, cfg.MaxRegistryBytes)
	}
	if got := len(getInstances(t, c, "user.rpc")); got != registered {
		t.Fatalf("user.rpc has %d instances, want the %d acknowledged", got, registered)
	}
	if !strings.Contains(httpGet(t, n, "/metrics"), "zrpc_registry_bytes ") {
		t.Error("/metrics lacks zrpc_registry_bytes")
	}
}

// TestQuotaRegistryBytesCutsHealthOutputs: a health change on a full
// registry is recorded, its output cut to the room left (the leader
// stamps its limits on health changes once every server bounds outputs),
// and the registry stays within a marker's bytes of its limit.
func TestQuotaRegistryBytesCutsHealthOutputs(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxRegistryBytes = 2000
	n := startNode(t, cfg)
	_, c := dial(t, n.GRPCAddr())
	ctx := ctxT(t)
	var ids []string
	for i := 0; i < 100; i++ {
		in := inst("user.rpc", fmt.Sprint("u", i), "127.0.0.1:9001")
		if _, err := c.Register(ctx, &pb.RegisterRequest{Instance: in}); err != nil {
			wantQuotaError(t, "registration past the registry's size", err, "max_registry_bytes")
			break
		}
		ids = append(ids, in.Id)
	}
	output := strings.Repeat("connection refused; ", 200) // 4,000 bytes
	for _, id := range ids {
		cmd := &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: &pb.SetHealth{
			Instances: []*pb.InstanceRef{{Service: "user.rpc", Id: id}}, Health: pb.Health_CRITICAL, Output: output}}}
		if _, err := n.applyAsLeader(ctx, cmd); err != nil {
			t.Fatalf("health change of %s: %v", id, err)
		}
	}
	for _, id := range ids {
		got := n.Store().FSM().Instance("user.rpc", id)
		if got.GetHealth() != pb.Health_CRITICAL {
			t.Fatalf("%s: health %v, want CRITICAL recorded on a full registry", id, got.GetHealth())
		}
		if !strings.HasSuffix(got.GetHealthOutput(), raftstore.CutOutputMark) || len(got.GetHealthOutput()) >= len(output) {
			t.Fatalf("%s: output of %d bytes stored as %d bytes ending %q, want it cut and marked", id, len(output), len(got.GetHealthOutput()), got.GetHealthOutput()[max(0, len(got.GetHealthOutput())-30):])
		}
	}
	if b, limit := n.Store().FSM().RegistryBytes(), cfg.MaxRegistryBytes+int64(len(ids)*(len(raftstore.CutOutputMark)+8)); b > limit {
		t.Fatalf("registry holds %d bytes after health outputs, past its limit %d and a marker per instance", b, cfg.MaxRegistryBytes)
	}
}
