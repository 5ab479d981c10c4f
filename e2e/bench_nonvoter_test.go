package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/netlab"
	"github.com/zrpcio/zrpc/internal/testlog"
)

// TestBenchNonvoterCut measures, with ZRPC_BENCH=1 (and root, for the
// lab), what a partition that cuts a nonvoter off costs a writer given it
// first: five agents at defaults (three voters), the e2e registrar
// (zrpcctl, a process per write, on the client host) registering through
// the nonvoter first, the others next, and the nonvoter cut off from the
// other agents for 12 s. It logs a RESULT line: the slowest write during
// the cut, the writes over a second, the writes during the cut, and the
// acknowledged and failed writes in all. It asserts only that no write
// failed. The file needs nothing newer than the lab harness, so it can be
// copied into a checkout of an earlier build to compare the two
// (docs/benchmarks.md).
func TestBenchNonvoterCut(t *testing.T) {
	if os.Getenv("ZRPC_BENCH") != "1" {
		t.Skip("a measurement: ZRPC_BENCH=1 runs it")
	}
	if err := netlab.Available(); err != nil {
		t.Skip(err)
	}
	lab, err := netlab.New(6)
	if err != nil {
		t.Fatal(err)
	}
	binaries(t)
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Error(err)
		}
	})
	c := &labCluster{t: t, lab: lab, client: lab.Host(5)}
	for i := range 5 {
		name := "a" + itoa(i)
		a := &agent{
			t: t, name: name, dataDir: filepath.Join(t.TempDir(), name),
			grpcPort: 8400, raftPort: 8401, gossipPort: 8402, httpPort: 8480,
			log: &testlog.Buffer{}, host: lab.Host(i), via: c.client,
		}
		c.agents = append(c.agents, a)
		if i == 0 {
			a.start()
		} else {
			a.start(c.agents[0].gossipAddr())
		}
	}
	nv := -1
	waitFor(t, 60*time.Second, "two nonvoters, one of them in contact with the leader", func() bool {
		out, err := c.agents[0].ctl("raft", "peers")
		if err != nil || strings.Count(out, "nonvoter") != 2 {
			return false
		}
		for _, line := range strings.Split(out, "\n") {
			for i, a := range c.agents {
				if strings.HasPrefix(line, a.name+" ") && strings.Contains(line, "nonvoter") {
					nv = i
				}
			}
		}
		st, err := c.agents[nv].ctl("status")
		return err == nil && !strings.Contains(st, "Cut off")
	})
	w := c.startRegistrar("nv.rpc", func(int) int { return nv })
	time.Sleep(2 * time.Second)
	w.mu.Lock()
	before := len(w.took)
	w.mu.Unlock()
	if err := c.lab.Partition([]int{nv}, c.others(nv)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(12 * time.Second)
	acked, fails, took := w.stop()
	if err := c.lab.Heal(); err != nil {
		t.Fatal(err)
	}
	var slowest time.Duration
	over := 0
	for _, d := range took[before:] {
		slowest = max(slowest, d)
		if d > time.Second {
			over++
		}
	}
	t.Logf("RESULT slowest=%.2fs over1s=%d writes_in_cut=%d acked=%d failed=%d", slowest.Seconds(), over, len(took)-before, len(acked), fails)
	if fails != 0 {
		t.Errorf("%d writes failed: the writer had other agents to go to", fails)
	}
}
