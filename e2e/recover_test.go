package e2e

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRecoverAfterLosingTwoOfThree: two of three agents are lost for good.
// The survivor, stopped, goes through `zrpcd agent recover --dry-run` (which
// lists the three voters and changes nothing) and `zrpcd agent recover`
// with the flags it runs with; started again it leads alone with the
// registry it held, takes writes, and a new agent joins it.
func TestRecoverAfterLosingTwoOfThree(t *testing.T) {
	zrpcd, zrpcctl := binaries(t)
	fast := []string{"--gossip-profile", "local"}
	n1, n2, n3 := startThree(t, fast...)
	waitFor(t, 30*time.Second, "three voters", func() bool {
		out, err := ctl(zrpcctl, n1.grpcAddr(), "raft", "peers")
		return err == nil && len(rows(out)) == 3
	})
	if _, err := ctl(zrpcctl, n1.grpcAddr(), "service", "register", "kept.rpc", "--id", "k1", "--address", "127.0.0.1:9001"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "n3 has the instance", func() bool {
		out, err := ctl(zrpcctl, n3.grpcAddr(), "service", "list", "--consistency", "stale")
		return err == nil && strings.Contains(out, "kept.rpc")
	})
	n1.kill()
	n2.kill()
	if err := n3.stop(); err != nil {
		t.Fatalf("stop n3: %v", err)
	}

	runRecover := func(extra ...string) string {
		t.Helper()
		args := append([]string{"agent", "recover", "--name", n3.name, "--data-dir", n3.dataDir, "--bind", "127.0.0.1",
			"--raft-port", strconv.Itoa(n3.raftPort)}, extra...)
		out, err := exec.Command(zrpcd, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("zrpcd %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	for range 2 {
		out := runRecover("--dry-run")
		if !strings.Contains(out, "n1 (voter") || !strings.Contains(out, "n2 (voter") || !strings.Contains(out, "Nothing changed") {
			t.Fatalf("recover --dry-run:\n%s\nwant the three voters and nothing changed", out)
		}
	}
	out := runRecover()
	if want := "n3, the only voter, at 127.0.0.1:" + strconv.Itoa(n3.raftPort); !strings.Contains(out, want) || !strings.Contains(out, "1 instances") {
		t.Fatalf("recover:\n%s\nwant %q and the one instance kept", out, want)
	}

	n3.start()
	waitFor(t, 20*time.Second, "n3 leads, the only voter", func() bool {
		out, err := ctl(zrpcctl, n3.grpcAddr(), "raft", "peers")
		r := rows(out)
		return err == nil && len(r) == 1 && r[0][0] == "n3" && r[0][3] == "yes"
	})
	if out, err := ctl(zrpcctl, n3.grpcAddr(), "service", "get", "kept.rpc"); err != nil || !strings.Contains(out, "k1") {
		t.Fatalf("the instance held before the recovery: %v\n%s", err, out)
	}
	if _, err := ctl(zrpcctl, n3.grpcAddr(), "service", "register", "after.rpc", "--id", "a1", "--address", "127.0.0.1:9002"); err != nil {
		t.Fatalf("a write after the recovery: %v", err)
	}
	n4 := newAgent(t, "n4", fast...)
	n4.start(n3.gossipAddr())
	waitFor(t, 30*time.Second, "n4 joins and has both instances", func() bool {
		out, err := ctl(zrpcctl, n4.grpcAddr(), "service", "list", "--consistency", "stale")
		return err == nil && strings.Contains(out, "kept.rpc") && strings.Contains(out, "after.rpc")
	})
}
