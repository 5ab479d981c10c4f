package node

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// TestMembersShowAnAgentsClockOffset: an agent whose clock runs an hour
// ahead shows so in the other agent's Members answer (what zrpcctl
// members prints) and in its zrpc_gossip_clock_offset_seconds.
func TestMembersShowAnAgentsClockOffset(t *testing.T) {
	n1 := startNode(t, testConfig(t))
	cfg := testConfig(t)
	cfg.Name = "n2"
	cfg.Join = []string{n1.gossip().LocalAddr()}
	startedNode(t, cfg, WithGossipClock(func() time.Time { return time.Now().Add(time.Hour) }))

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
