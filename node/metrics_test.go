package node

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// TestInstanceMetricsFollowTheRegistry: zrpc_registry_instances, read
// from the counts the replica keeps on apply, agrees with a count of the
// replica's instances after registrations, health changes and removals.
func TestInstanceMetricsFollowTheRegistry(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, c := dial(t, n.GRPCAddr())
	scrapeAgrees := func(step string) {
		t.Helper()
		resp, err := http.Get("http://" + n.HTTPAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		all, _ := n.store.FSM().AllInstances()
		walk := map[pb.Health]int{}
		for _, in := range all {
			walk[in.Health]++
		}
		for _, h := range []pb.Health{pb.Health_PASSING, pb.Health_WARNING, pb.Health_CRITICAL} {
			want := fmt.Sprintf("zrpc_registry_instances{health=%q} %d\n", healthName(h), walk[h])
			if !strings.Contains(string(body), want) {
				t.Fatalf("after %s: /metrics lacks %q (the replica's instances: %v)", step, strings.TrimSpace(want), walk)
			}
		}
	}
	for i := range 5 {
		if _, err := c.Register(ctxT(t), &pb.RegisterRequest{Instance: inst("user.rpc", fmt.Sprint("u", i), "127.0.0.1:9001")}); err != nil {
			t.Fatal(err)
		}
	}
	scrapeAgrees("5 registrations")
	set := func(h pb.Health, ids ...string) {
		sh := &pb.SetHealth{Health: h, Output: "test"}
		for _, id := range ids {
			sh.Instances = append(sh.Instances, &pb.InstanceRef{Service: "user.rpc", Id: id})
		}
		if _, err := n.store.Apply(ctxT(t), &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: sh}}); err != nil {
			t.Fatal(err)
		}
	}
	set(pb.Health_CRITICAL, "u0", "u1")
	set(pb.Health_WARNING, "u2")
	scrapeAgrees("health changes")
	for _, id := range []string{"u0", "u3"} {
		if _, err := c.Deregister(ctxT(t), &pb.DeregisterRequest{Service: "user.rpc", Id: id}); err != nil {
			t.Fatal(err)
		}
	}
	scrapeAgrees("removals")
}
