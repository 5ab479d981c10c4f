package node

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
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

// TestReadinessSaysWhyNotReady: /readyz is ready while a leader is known;
// an agent whose Raft node stopped says so and why, even with the last
// leader it knew, and /healthz turns unhealthy (a restart recovers it);
// without a leader it says how many voters it reaches.
func TestReadinessSaysWhyNotReady(t *testing.T) {
	twoOfThree := func() (raftstore.Quorum, error) {
		return raftstore.Quorum{Voters: 3, Unreachable: []raftstore.Unreachable{{ID: "n3", Status: "failed"}}}, nil
	}
	noQuorum := func() (raftstore.Quorum, error) { return raftstore.Quorum{}, errors.New("no configuration") }
	stopped := "fsync of the Raft log failed (input/output error): check the disk, then restart the agent"
	tests := []struct {
		name   string
		st     raftstore.Status
		quorum func() (raftstore.Quorum, error)
		ready  bool
		want   string
	}{
		{"a leader", raftstore.Status{State: raftstore.Follower, LeaderID: "n2", LeaderAddr: "127.0.0.1:8401"}, twoOfThree, true, "ok: leader n2"},
		{"no leader", raftstore.Status{State: raftstore.Candidate}, twoOfThree, false, "not ready: no Raft leader known (2 of 3 voters reachable (n3 failed); a leader needs 2)"},
		{"no leader, no configuration", raftstore.Status{State: raftstore.Follower}, noQuorum, false, "not ready: no Raft leader known"},
		{"Raft node stopped", raftstore.Status{State: raftstore.Shutdown, LeaderID: "n2", LeaderAddr: "127.0.0.1:8401", Stopped: stopped}, twoOfThree, false,
			"not ready: Raft node stopped: " + stopped},
	}
	if got, ok := liveness(""); got != "ok" || !ok {
		t.Errorf("liveness of a running Raft node = %q, %v; want ok", got, ok)
	}
	if got, ok := liveness(stopped); ok || got != "unhealthy: Raft node stopped: "+stopped {
		t.Errorf("liveness of a stopped Raft node = %q, %v; want unhealthy, saying why", got, ok)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ready := readiness(tt.st, tt.quorum)
			if got != tt.want || ready != tt.ready {
				t.Fatalf("readiness = %q, %v; want %q, %v", got, ready, tt.want, tt.ready)
			}
		})
	}
}

// counterValue is the value of the counter name's series with the label
// pairs labels in fams, and whether there is one.
func counterValue(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	for _, m := range fams[name].GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			match = match && have[labels[i]] == labels[i+1]
		}
		if match {
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// TestAgentCountsWhatItRefusesOrGivesUp: the bounds that refuse or give
// up (gossip streams past 128 from one host, DNS questions without a
// build turn, waits for a hung shard disk) each have a counter in
// /metrics from the start, at zero, and a host holding more gossip
// streams than the bound moves its counter.
func TestAgentCountsWhatItRefusesOrGivesUp(t *testing.T) {
	n := startNode(t, testConfig(t))
	fams := scrapeMetrics(t, n.HTTPAddr())
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"zrpc_gossip_streams_refused_total", nil},
		{"zrpc_dns_queries_total", []string{"rcode", "SERVFAIL"}},
		{"zrpc_blob_shard_disk_waits_abandoned_total", []string{"op", "write"}},
		{"zrpc_blob_shard_disk_waits_abandoned_total", []string{"op", "commit"}},
		{"zrpc_blob_shard_disk_waits_abandoned_total", []string{"op", "delete"}},
		{"zrpc_blob_shard_disk_waits_abandoned_total", []string{"op", "read"}},
	} {
		if v, ok := counterValue(fams, c.name, c.labels...); !ok || v != 0 {
			t.Errorf("%s%v on a new agent: %v (served: %v), want 0", c.name, c.labels, v, ok)
		}
	}

	// Silent streams, held open: the guard waits for their headers.
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	dial := func() {
		t.Helper()
		c, err := net.Dial("tcp", n.gossip().LocalAddr())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	for range 128 {
		dial()
	}
	waitFor(t, 20*time.Second, "a stream past the gossip port's bound per host to be counted", func() bool {
		dial()
		v, _ := counterValue(scrapeMetrics(t, n.HTTPAddr()), "zrpc_gossip_streams_refused_total")
		return v > 0
	})
}
