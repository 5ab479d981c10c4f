package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestThreeProcessCluster starts three zrpcd processes, joins them with
// `zrpcd agent join`, kills one with SIGKILL and checks what `zrpcctl
// members` and `service list` say on the others.
func TestThreeProcessCluster(t *testing.T) {
	_, zrpcctl := binaries(t)
	fast := []string{"--gossip-profile", "local", "--dead-node-reap", "3s"}
	n1, n2, n3 := startThree(t, fast...)

	members := func(a *agent) map[string][]string {
		out, err := ctl(zrpcctl, a.grpcAddr(), "members")
		if err != nil {
			return nil
		}
		m := map[string][]string{}
		for _, r := range rows(out) {
			m[r[0]] = r
		}
		return m
	}
	// NAME ADDRESS STATUS ROLE BUILD ZONE
	waitFor(t, 30*time.Second, "three alive members, one leader and two voters", func() bool {
		m := members(n2)
		roles := map[string]int{}
		for _, r := range m {
			if len(r) >= 4 && r[2] == "alive" {
				roles[r[3]]++
			}
		}
		return roles["leader"] == 1 && roles["voter"] == 2
	})

	if _, err := ctl(zrpcctl, n3.grpcAddr(), "service", "register", "user.rpc", "--id", "u1", "--address", "127.0.0.1:9001"); err != nil {
		t.Fatal(err)
	}
	if _, err := ctl(zrpcctl, n2.grpcAddr(), "service", "register", "order.rpc", "--id", "o1", "--address", "127.0.0.1:9101"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []*agent{n1, n2, n3} {
		waitFor(t, 10*time.Second, a.name+" lists both services", func() bool {
			out, err := ctl(zrpcctl, a.grpcAddr(), "service", "list", "--consistency", "stale")
			return err == nil && strings.Contains(out, "user.rpc") && strings.Contains(out, "order.rpc")
		})
	}

	n3.kill()
	waitFor(t, 20*time.Second, "n3 shown failed on n1", func() bool {
		r := members(n1)["n3"]
		return len(r) >= 3 && r[2] == "failed"
	})
	// n3 is reaped: out of Raft, while the instance registered through it
	// by hand stays, critical, saying why, until an operator removes n3
	// (or deregisters the instance, or n3 comes back).
	waitFor(t, 20*time.Second, "n3 out of Raft", func() bool {
		out, err := ctl(zrpcctl, n1.grpcAddr(), "raft", "peers")
		return err == nil && len(rows(out)) == 2 && !strings.Contains(out, "n3")
	})
	// ID ADDRESS NODE HEALTH ... HEALTH_OUTPUT
	waitFor(t, 20*time.Second, "u1 kept, critical, with the reap as its output", func() bool {
		out, err := ctl(zrpcctl, n1.grpcAddr(), "service", "get", "user.rpc")
		r := rows(out)
		return err == nil && len(r) == 1 && r[0][0] == "u1" && r[0][3] == "critical" &&
			strings.Contains(out, "removed with its agent n3: failed")
	})
	if out, err := ctl(zrpcctl, n1.grpcAddr(), "raft", "remove-peer", "n3"); err != nil {
		t.Fatalf("raft remove-peer n3 after its reap: %v\n%s", err, out)
	}
	waitFor(t, 20*time.Second, "only order.rpc listed on n1 and n2", func() bool {
		for _, a := range []*agent{n1, n2} {
			out, err := ctl(zrpcctl, a.grpcAddr(), "service", "list")
			if err != nil || strings.Contains(out, "user.rpc") || !strings.Contains(out, "order.rpc") {
				return false
			}
		}
		return true
	})

	// n2 leaves for good: the process exits by itself and n1 carries on.
	out, err := ctl(zrpcctl, n2.grpcAddr(), "leave")
	if err != nil || !strings.Contains(out, "left the cluster") {
		t.Fatalf("leave: %v\n%s", err, out)
	}
	if err := n2.wait(20 * time.Second); err != nil {
		t.Fatalf("n2 after leave: %v", err)
	}
	waitFor(t, 20*time.Second, "n1 alone in Raft and writable", func() bool {
		out, err := ctl(zrpcctl, n1.grpcAddr(), "raft", "peers")
		if err != nil || len(rows(out)) != 1 {
			return false
		}
		_, err = ctl(zrpcctl, n1.grpcAddr(), "service", "register", "after.rpc", "--id", "a1", "--address", "127.0.0.1:9201")
		return err == nil
	})
}

// TestBootstrapExpect starts three agents together with
// --bootstrap-expect 3, each told about the others: they form one cluster
// with three voters, and a restarted member does not bootstrap again.
func TestBootstrapExpect(t *testing.T) {
	_, zrpcctl := binaries(t)
	flags := []string{"--gossip-profile", "local", "--bootstrap-expect", "3"}
	agents := []*agent{newAgent(t, "b1", flags...), newAgent(t, "b2", flags...), newAgent(t, "b3", flags...)}
	for i, a := range agents {
		var others []string
		for j, o := range agents {
			if j != i {
				others = append(others, o.gossipAddr())
			}
		}
		a.start(others...)
	}
	peers := func(a *agent) [][]string {
		out, err := ctl(zrpcctl, a.grpcAddr(), "raft", "peers")
		if err != nil {
			return nil
		}
		return rows(out)
	}
	waitFor(t, 30*time.Second, "three voters with one leader", func() bool {
		p := peers(agents[2])
		leaders := 0
		for _, r := range p {
			if len(r) >= 4 && r[2] == "voter" && r[3] == "yes" {
				leaders++
			}
		}
		return len(p) == 3 && leaders == 1
	})
	agents[0].kill()
	agents[0].start()
	waitFor(t, 30*time.Second, "the restarted agent is back in the same cluster", func() bool {
		p := peers(agents[0])
		return len(p) == 3
	})
	if _, err := ctl(zrpcctl, agents[0].grpcAddr(), "service", "register", "x.rpc", "--id", "x1", "--address", "127.0.0.1:9301"); err != nil {
		t.Fatal(err)
	}
}
