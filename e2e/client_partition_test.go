package e2e

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/testlog"
)

// progressLine is one line of `zrpcctl bench --progress`: "3.0s  38062
// calls  0 errors  12017 calls/s".
var progressLine = regexp.MustCompile(`([0-9.]+)s\s+([0-9]+) calls\s+([0-9]+) errors`)

// progressAt returns the calls bench had completed and the errors it had
// counted by elapsed seconds (its last progress line at or before it).
func progressAt(progress string, elapsed float64) (calls, errs int) {
	for _, m := range progressLine.FindAllStringSubmatch(progress, -1) {
		if at, _ := strconv.ParseFloat(m[1], 64); at <= elapsed {
			calls, _ = strconv.Atoi(m[2])
			errs, _ = strconv.Atoi(m[3])
		}
	}
	return calls, errs
}

// TestClientsRouteAroundAnInstanceTheyCannotReach: two instances of
// user.rpc on two hosts; under load from a third (zrpcctl bench, 8
// callers, p2c_ewma), the client's host loses the network to one instance
// (packets dropped) for 20 s, while the agents still reach it and keep it
// passing. New calls go to the other instance at once: the load goes on.
// (The balancer once took an instance that gave no answer for one that
// had become cheap, its cost decaying with no sample, and sent it every
// new call: all 8 callers hung until the heal.) The calls already sent to
// the silent instance end while the network is still cut, Unavailable,
// once the connection's keepalive finds nothing answers (10 s without a
// word, then 5 s for a ping); before, they waited out the cut.
func TestClientsRouteAroundAnInstanceTheyCannotReach(t *testing.T) {
	_, zrpcctl := binaries(t)
	c := startLabSpare(t, 3, 2)
	a, b := c.lab.Host(3), c.lab.Host(4)
	startUserServiceOn(t, a, 9000, c.agents[0], c.agents[1])
	startUserServiceOn(t, b, 9001, c.agents[1], c.agents[2])

	cmd := c.client.Command(zrpcctl, "--addr", c.addrs(0), "bench", "user.rpc/GetUserInfo", "--data", `{"user_id":1}`,
		"-d", "26s", "-c", "8", "--progress", "-o", "json")
	stdout, stderr := &testlog.Buffer{}, &testlog.Buffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	started := time.Now()
	waitFor(t, 10*time.Second, "bench under way, both instances answering", func() bool {
		calls, _ := progressAt(stderr.String(), 1e9)
		return calls > 0 && time.Since(started) > 3*time.Second
	})
	if err := c.lab.Partition([]int{a.Index}, []int{c.client.Index}); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Since(started).Seconds()
	time.Sleep(20 * time.Second)
	if err := c.lab.Heal(); err != nil {
		t.Fatal(err)
	}
	healAt := time.Since(started).Seconds()
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("bench: %v\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("bench still running 60 s after its 12 s")
	}
	// bench's clock starts a moment after the process: count from a
	// second into the cut.
	progress := strings.ReplaceAll(stderr.String(), "\r", "\n")
	before, _ := progressAt(progress, cutAt+1)
	after, _ := progressAt(progress, cutAt+5)
	during := after - before
	t.Logf("%d calls completed in the first 4 s the client could not reach %s", during, a.IP)
	if during < 100 {
		t.Fatalf("%d calls completed while the client could not reach one of two instances: the load stopped\n%s", during, progress)
	}
	var r struct {
		Codes map[string]int64 `json:"codes"`
	}
	if err := json.Unmarshal([]byte(stdout.String()), &r); err != nil {
		t.Fatalf("bench -o json: %v\n%s", err, stdout.String())
	}
	for code := range r.Codes {
		if code != "OK" && code != "Unavailable" {
			t.Fatalf("bench counted %s: want only OK and the Unavailable of the calls cut off: %v", code, r.Codes)
		}
	}
	_, ended := progressAt(progress, healAt-1)
	t.Logf("%d calls to %s ended Unavailable before the heal (codes %v)", ended, a.IP, r.Codes)
	if ended == 0 {
		t.Fatalf("the calls sent to %s before the cut were still waiting when the network came back, 20 s on:\n%s", a.IP, progress)
	}
}
