package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestAClusterWhoseAgentsAllMovedToNewAddressesComesBack: every agent is
// stopped and started again from its data dir on another machine, with a
// new address and the same ports (a Kubernetes StatefulSet's pods
// rescheduled, each with a new IP), told only where the others are now.
// No agent is at an address the Raft configuration names, yet they elect
// a leader, the configuration moves to the new addresses, the registry is
// whole and takes writes: no peers.json, no `zrpcd agent recover`.
func TestAClusterWhoseAgentsAllMovedToNewAddressesComesBack(t *testing.T) {
	c := startLabSpare(t, 3, 3)
	for i, a := range c.agents {
		a.mustCtl("service", "register", "before.rpc", "--id", "b"+itoa(i), "--address", "10.0.1.1:"+itoa(9000+i))
	}
	for _, a := range c.agents {
		if err := a.stop(); err != nil {
			t.Fatalf("stop %s: %v", a.name, err)
		}
	}
	var joins []string
	for i, a := range c.agents {
		a.host = c.lab.Host(3 + i)
		joins = append(joins, a.gossipAddr())
	}
	moved := time.Now()
	for i, a := range c.agents {
		var others []string
		for j, addr := range joins {
			if j != i {
				others = append(others, addr)
			}
		}
		a.start(others...)
	}
	c.waitSettled("at their new addresses")
	t.Logf("settled %s after the moved agents started", time.Since(moved).Round(time.Millisecond))
	waitFor(t, 30*time.Second, "the Raft configuration at the new addresses", func() bool {
		out, err := c.agents[0].ctl("raft", "peers")
		if err != nil {
			return false
		}
		for _, a := range c.agents {
			if !strings.Contains(out, a.host.IP+":8401") {
				return false
			}
		}
		return !strings.Contains(out, "10.0.0.1:") && !strings.Contains(out, "10.0.0.2:") && !strings.Contains(out, "10.0.0.3:")
	})
	for _, a := range c.agents {
		out := a.mustCtl("service", "get", "before.rpc")
		for i := range c.agents {
			if !strings.Contains(out, "b"+itoa(i)+" ") {
				t.Fatalf("%s after the move: before.rpc lacks b%d:\n%s", a.name, i, out)
			}
		}
	}
	c.agents[2].mustCtl("service", "register", "after.rpc", "--id", "a1", "--address", "10.0.1.1:9100")
	for _, a := range c.agents {
		waitFor(t, 20*time.Second, a.name+" holds the write made after the move", func() bool {
			out, err := a.ctl("service", "get", "after.rpc")
			return err == nil && strings.Contains(out, "a1 ")
		})
	}
	c.checkAlive()
}
