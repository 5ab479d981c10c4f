package node

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func TestRegisterGetListDeregister(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, c := dial(t, n.GRPCAddr())
	ctx := ctxT(t)

	r1, err := c.Register(ctx, &pb.RegisterRequest{Instance: &pb.Instance{
		Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9001", Zone: "a", Version: "v1",
		Tags: []string{"canary"}, Metadata: map[string]string{"k": "v"},
	}})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if got := r1.Instance; got.Weight != 100 || got.Node != "n1" || got.Health != pb.Health_PASSING || got.CreateRevision != r1.Header.Revision {
		t.Fatalf("registered instance = %v, want weight 100, node n1, passing, create_revision %d", got, r1.Header.Revision)
	}
	if _, err := c.Register(ctx, &pb.RegisterRequest{Instance: inst("user.rpc", "u2", "127.0.0.1:9002")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, &pb.RegisterRequest{Instance: inst("order.rpc", "o1", "127.0.0.1:9101")}); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []pb.Consistency{pb.Consistency_STALE, pb.Consistency_DEFAULT, pb.Consistency_CONSISTENT} {
		resp, err := c.Get(ctx, &pb.GetRequest{Service: "user.rpc", Consistency: mode})
		if err != nil {
			t.Fatalf("Get %v: %v", mode, err)
		}
		if len(resp.Instances) != 2 || resp.Instances[0].Id != "u1" || resp.Instances[1].Id != "u2" {
			t.Fatalf("Get %v = %v, want u1, u2", mode, resp.Instances)
		}
	}
	list, err := c.List(ctx, &pb.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := "order.rpc:1/1 user.rpc:2/2 "
	got := ""
	for _, s := range list.Services {
		got += fmt.Sprintf("%s:%d/%d ", s.Name, s.Passing, s.Instances)
	}
	if got != want {
		t.Fatalf("List = %q, want %q", got, want)
	}

	if _, err := c.Deregister(ctx, &pb.DeregisterRequest{Service: "user.rpc", Id: "u1"}); err != nil {
		t.Fatal(err)
	}
	if ids := getInstances(t, c, "user.rpc"); len(ids) != 1 || ids[0].Id != "u2" {
		t.Fatalf("after deregister: %v", ids)
	}
	_, err = c.Deregister(ctx, &pb.DeregisterRequest{Service: "user.rpc", Id: "nope"})
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "user.rpc/nope") {
		t.Fatalf("deregister unknown: %v, want NotFound naming user.rpc/nope", err)
	}
}

func TestBadInputIsRejectedAndChangesNothing(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, c := dial(t, n.GRPCAddr())
	ctx := ctxT(t)
	long := strings.Repeat("x", 200)
	manyTags := make([]string, 40)
	for i := range manyTags {
		manyTags[i] = fmt.Sprint("t", i)
	}
	bigMeta := map[string]string{}
	for i := 0; i < 70; i++ {
		bigMeta[fmt.Sprint("k", i)] = "v"
	}
	ok := func() *pb.Instance { return inst("user.rpc", "u1", "127.0.0.1:9001") }
	with := func(f func(*pb.Instance)) *pb.Instance { i := ok(); f(i); return i }
	cases := []struct {
		name  string
		in    *pb.Instance
		field string
	}{
		{"nil instance", nil, "instance"},
		{"empty service", with(func(i *pb.Instance) { i.Service = "" }), "instance.service"},
		{"service with slash", with(func(i *pb.Instance) { i.Service = "a/b" }), "instance.service"},
		{"service too long", with(func(i *pb.Instance) { i.Service = long }), "instance.service"},
		{"empty id", with(func(i *pb.Instance) { i.Id = "" }), "instance.id"},
		{"id with space", with(func(i *pb.Instance) { i.Id = "a b" }), "instance.id"},
		{"address without port", with(func(i *pb.Instance) { i.Address = "127.0.0.1" }), "instance.address"},
		{"address port 0", with(func(i *pb.Instance) { i.Address = "127.0.0.1:0" }), "instance.address"},
		{"address port too big", with(func(i *pb.Instance) { i.Address = "127.0.0.1:70000" }), "instance.address"},
		{"weight too big", with(func(i *pb.Instance) { i.Weight = 1 << 20 }), "instance.weight"},
		{"too many tags", with(func(i *pb.Instance) { i.Tags = manyTags }), "instance.tags"},
		{"empty tag", with(func(i *pb.Instance) { i.Tags = []string{""} }), "instance.tags"},
		{"too much metadata", with(func(i *pb.Instance) { i.Metadata = bigMeta }), "instance.metadata"},
		{"bad metadata key", with(func(i *pb.Instance) { i.Metadata = map[string]string{"a b": "v"} }), "instance.metadata"},
		{"metadata value too long", with(func(i *pb.Instance) { i.Metadata = map[string]string{"k": strings.Repeat("v", 2000)} }), "instance.metadata"},
		{"ttl too short", with(func(i *pb.Instance) { i.Check = &pb.Check{Ttl: durationpb.New(time.Millisecond)} }), "instance.check.ttl"},
		{"ttl and grpc", with(func(i *pb.Instance) {
			i.Check = &pb.Check{Ttl: durationpb.New(time.Second), Grpc: true, Interval: durationpb.New(time.Second)}
		}), "instance.check"},
		{"grpc without interval", with(func(i *pb.Instance) { i.Check = &pb.Check{Grpc: true} }), "instance.check.interval"},
		{"grpc timeout above interval", with(func(i *pb.Instance) {
			i.Check = &pb.Check{Grpc: true, Interval: durationpb.New(time.Second), Timeout: durationpb.New(2 * time.Second)}
		}), "instance.check.timeout"},
		{"bad health", with(func(i *pb.Instance) { i.Health = 42 }), "instance.health"},
		{"bad zone", with(func(i *pb.Instance) { i.Zone = "a b" }), "instance.zone"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Register(ctx, &pb.RegisterRequest{Instance: tc.in})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Register: %v, want InvalidArgument naming %s", err, tc.field)
			}
		})
	}
	list, err := c.List(ctx, &pb.ListRequest{Consistency: pb.Consistency_CONSISTENT})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Services) != 0 {
		t.Fatalf("rejected registrations changed the registry: %v", list.Services)
	}
	for _, req := range []*pb.DeregisterRequest{{Service: "", Id: "x"}, {Service: "s", Id: ""}} {
		if _, err := c.Deregister(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("Deregister(%v): %v, want InvalidArgument", req, err)
		}
	}
	if _, err := c.Get(ctx, &pb.GetRequest{Service: "bad name"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Get(bad name): %v, want InvalidArgument", err)
	}
	if _, err := c.Get(ctx, &pb.GetRequest{Service: "s", Consistency: 9}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Get(consistency 9): %v, want InvalidArgument", err)
	}
}

func TestRestartKeepsAcknowledgedRegistrations(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	_, c := dial(t, n.GRPCAddr())
	ctx := ctxT(t)
	const count = 50
	for i := 0; i < count; i++ {
		if _, err := c.Register(ctx, &pb.RegisterRequest{Instance: inst("user.rpc", fmt.Sprint("u", i), "127.0.0.1:9001")}); err != nil {
			t.Fatal(err)
		}
	}
	before := getInstances(t, c, "user.rpc")
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	n2 := startNode(t, cfg)
	_, c2 := dial(t, n2.GRPCAddr())
	after := getInstances(t, c2, "user.rpc")
	if len(after) != count {
		t.Fatalf("after restart %d instances, want %d", len(after), count)
	}
	for i := range before {
		if before[i].Id != after[i].Id || before[i].ModRevision != after[i].ModRevision {
			t.Fatalf("instance %d changed across restart: %v -> %v", i, before[i], after[i])
		}
	}
}

func TestHTTPEndpoints(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, c := dial(t, n.GRPCAddr())
	if _, err := c.Register(ctxT(t), &pb.RegisterRequest{Instance: inst("user.rpc", "u1", "127.0.0.1:9001")}); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + n.HTTPAddr() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
	if code, body := get("/readyz"); code != 200 || !strings.Contains(body, "n1") {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	_, metrics := get("/metrics")
	for _, want := range []string{
		`zrpc_registry_instances{health="passing"} 1`,
		`zrpc_raft_leader 1`,
		`zrpc_raft_state{state="Leader"} 1`,
		`zrpc_grpc_server_handled_total{code="OK",method="/zrpc.v1.Registry/Register"} 1`,
		`zrpc_raft_apply_duration_seconds_count{result="ok"}`,
		`zrpc_gossip_members{status="alive"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, _ := get("/debug/pprof/"); code != 200 {
		t.Fatalf("/debug/pprof/ = %d", code)
	}
}

// TestRegisterAnswersTheInstanceAsStored: a registration, first or
// again, is answered with the instance as the registry then holds it: its
// create revision kept from the first, its health time kept while its
// health is unchanged.
func TestRegisterAnswersTheInstanceAsStored(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, c := dial(t, n.GRPCAddr())
	ctx := ctxT(t)
	in := func() *pb.Instance {
		return &pb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9001", Tags: []string{"b", "a"},
			Metadata: map[string]string{"k": "v", "a": "b", "z": "y"}}
	}
	var first *pb.Instance
	for i := range 2 {
		resp, err := c.Register(ctx, &pb.RegisterRequest{Instance: in()})
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		got, err := c.Get(ctx, &pb.GetRequest{Service: "user.rpc", Consistency: pb.Consistency_CONSISTENT})
		if err != nil || len(got.Instances) != 1 {
			t.Fatalf("Get = %v, %v", got, err)
		}
		if !proto.Equal(resp.Instance, got.Instances[0]) {
			t.Fatalf("registration %d answered %v, the registry holds %v", i+1, resp.Instance, got.Instances[0])
		}
		if first == nil {
			first = resp.Instance
			continue
		}
		if r := resp.Instance; r.CreateRevision != first.CreateRevision || r.HealthSince != first.HealthSince || r.ModRevision <= first.ModRevision {
			t.Fatalf("registered again = %v, want create revision and health time of %v and a newer mod revision", r, first)
		}
	}
}
