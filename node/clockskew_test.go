package node

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// startPairHourApart starts n1 on the wall clock and n2, joined to it,
// on a clock an hour ahead.
func startPairHourApart(t *testing.T) (n1, n2 *Node) {
	t.Helper()
	n1 = startNode(t, testConfig(t))
	cfg := testConfig(t)
	cfg.Name = "n2"
	cfg.Join = []string{n1.gossip().LocalAddr()}
	n2 = startedNode(t, cfg, WithClock(func() time.Time { return time.Now().Add(time.Hour) }))
	return n1, n2
}

// TestMembersShowAnAgentsClockOffset: an agent whose clock runs an hour
// ahead shows so in the other agent's Members answer (what zrpcctl
// members prints) and in its zrpc_gossip_clock_offset_seconds.
func TestMembersShowAnAgentsClockOffset(t *testing.T) {
	n1, _ := startPairHourApart(t)
	conn, _ := dial(t, n1.GRPCAddr())
	status := pb.NewStatusClient(conn)
	near := func(d, want time.Duration) bool { return (d - want).Abs() < time.Second }
	var seen *pb.Member
	waitFor(t, 20*time.Second, "n1's members to show n2's clock an hour ahead", func() bool {
		resp, err := status.Members(ctxT(t), &pb.MembersRequest{})
		if err != nil {
			return false
		}
		for _, m := range resp.Members {
			switch {
			case m.Name == "n1" && m.ClockOffset != nil:
				t.Fatalf("n1 lists an offset of its own clock: %v", m.ClockOffset.AsDuration())
			case m.Name == "n2" && m.ClockOffset != nil:
				seen = m
			}
		}
		return seen != nil && near(seen.ClockOffset.AsDuration(), time.Hour)
	})

	resp, err := http.Get("http://" + n1.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`(?m)^zrpc_gossip_clock_offset_seconds\{member="n2"\} (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no clock offset for n2:\n%s", body)
	}
	if v, err := strconv.ParseFloat(string(m[1]), 64); err != nil || !near(time.Duration(v*float64(time.Second)), time.Hour) {
		t.Fatalf("zrpc_gossip_clock_offset_seconds{member=\"n2\"} = %s, want about 3600", m[1])
	}
}

// TestLeaderWithAClockAheadRemovesNoCriticalInstanceEarly: an instance
// turns critical under n1, which stamps health_since with its clock;
// leadership then moves to n2, whose clock runs an hour ahead, so by n2's
// clock the instance has been critical for an hour. n2 must count its
// deregister_critical_after from when it saw it critical, not remove it
// at once, and remove it once that much time has passed.
func TestLeaderWithAClockAheadRemovesNoCriticalInstanceEarly(t *testing.T) {
	n1, n2 := startPairHourApart(t)
	waitFor(t, 20*time.Second, "n2 to be a voter", func() bool {
		servers, err := n1.store.Servers()
		return err == nil && len(servers) == 2 && servers[0].Suffrage == raftstore.Voter && servers[1].Suffrage == raftstore.Voter
	})

	_, c := dial(t, n1.GRPCAddr())
	const dca = 8 * time.Second
	in := inst("ttl.rpc", "t1", "127.0.0.1:9001")
	in.Check = &pb.Check{Ttl: durationpb.New(time.Second), DeregisterCriticalAfter: durationpb.New(dca)}
	if _, err := c.Register(ctxT(t), &pb.RegisterRequest{Instance: in}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the instance's TTL to run out under n1", func() bool {
		return healthOf(t, c, "ttl.rpc", "t1") == pb.Health_CRITICAL
	})
	critical := time.Now()
	if err := n1.store.TransferLeadership(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "n2 to lead", n2.store.IsLeader)
	took := time.Now()
	if took.Sub(critical) > dca/2 {
		t.Fatalf("leadership took %s to move: too long for the test to tell n2's count from n1's", took.Sub(critical))
	}
	present := func() bool {
		resp, err := c.Get(ctxT(t), &pb.GetRequest{Service: "ttl.rpc", Consistency: pb.Consistency_STALE})
		return err == nil && len(resp.Instances) == 1
	}
	for time.Since(took) < 2*time.Second {
		if !present() {
			t.Fatalf("n2 removed the instance %s after it took over: by its clock, an hour ahead, health_since was an hour ago, but it had seen it critical for less than deregister_critical_after (%s)",
				time.Since(took).Round(time.Millisecond), dca)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, 3*dca, "n2 to remove the instance once it has seen it critical for deregister_critical_after", func() bool { return !present() })
}
