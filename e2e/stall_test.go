package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTTLInstanceOutlivesItsAgentsPause: an agent stopped (SIGSTOP, as a
// paused VM is) together with the service that renews its TTL instance
// there, for longer than the TTL, does not mark the instance critical when
// both wake: the leader moves its TTL deadlines by the time it did not run,
// and the first renewal after the pause comes in time.
func TestTTLInstanceOutlivesItsAgentsPause(t *testing.T) {
	a := newAgent(t, "n1")
	a.start()
	a.waitLeader()
	run := a.mustCtl
	// health returns the instance's health and when it last changed.
	health := func() (string, string) {
		t.Helper()
		var insts []map[string]any
		if err := json.Unmarshal([]byte(run("service", "get", "ttl.rpc", "-o", "json")), &insts); err != nil || len(insts) != 1 {
			t.Fatalf("service get ttl.rpc -o json: %v (%d instances)", err, len(insts))
		}
		h, _ := insts[0]["health"].(string)
		since, _ := json.Marshal(insts[0]["health_since"])
		return h, string(since)
	}

	run("service", "register", "ttl.rpc", "--id", "i1", "--address", "127.0.0.1:9001", "--ttl", "2s")
	run("service", "renew", "ttl.rpc", "i1")
	before, since := health()
	if !strings.EqualFold(before, "passing") || since == "null" {
		t.Fatalf("a renewed TTL instance: health %q since %s, want passing with a time", before, since)
	}

	const pause = 4 * time.Second
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(pause)
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The service wakes too, and renews at once, and again.
	run("service", "renew", "ttl.rpc", "i1")
	time.Sleep(500 * time.Millisecond)
	run("service", "renew", "ttl.rpc", "i1")

	after, sinceAfter := health()
	if !strings.EqualFold(after, "passing") || sinceAfter != since {
		t.Fatalf("after the agent and its service were stopped for %v (TTL 2s): health %q since %s, was passing since %s: the pause expired the TTL",
			pause, after, sinceAfter, since)
	}
	waitFor(t, 10*time.Second, "the agent to log the time it lost", func() bool {
		return strings.Contains(a.log.String(), "did not run for a while")
	})
	if v, err := metricValue(a, "zrpc_agent_stalled_seconds_total"); err != nil || v < (pause-time.Second).Seconds() {
		t.Fatalf("zrpc_agent_stalled_seconds_total = %v (%v) after a %v stop, want at least %v", v, err, pause, pause-time.Second)
	}
}

// metricValue scrapes a's /metrics for the value of the unlabelled name.
func metricValue(a *agent, name string) (float64, error) {
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(a.httpPort) + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /metrics", name)
}
