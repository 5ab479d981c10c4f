package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWritesThroughAFollowerOutliveAStoppedLeader: the leader stopped
// (SIGSTOP, as a paused VM or a partition that drops its packets) keeps
// its connections open while the other two elect a new leader. A write
// and a TTL renewal sent through a follower right after the stop succeed
// (the follower asks the new leader once it sees leadership move) instead
// of failing on the old leader's silence; the old leader, woken, has
// them too.
func TestWritesThroughAFollowerOutliveAStoppedLeader(t *testing.T) {
	_, zrpcctl := binaries(t)
	n1, n2, n3 := startThree(t, "--gossip-profile", "local")
	agents := map[string]*agent{"n1": n1, "n2": n2, "n3": n3}
	leader := agents[waitThreeVoters(t, zrpcctl, n1)]
	// Every agent's gossip, not only n1's, must have heard that the
	// others hold the log: a follower whose gossip still says a peer has
	// no Raft state counts too few voters for a leader and stops waiting
	// for one after a second.
	for _, a := range []*agent{n2, n3} {
		waitThreeVoters(t, zrpcctl, a)
	}
	var follower *agent
	for _, a := range []*agent{n1, n2, n3} {
		if a != leader {
			follower = a
			break
		}
	}
	follower.mustCtl("service", "register", "ttl.rpc", "--id", "t1", "--address", "127.0.0.1:9001", "--ttl", "30s")

	if err := leader.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			leader.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	defer resume()
	// Both within one zrpcctl timeout (10 s): an election takes a second
	// or two; leader_wait, which bounds the wait for a leader, is 5 s.
	if _, err := ctl(zrpcctl, follower.grpcAddr(), "--timeout", "10s", "service", "register", "api.rpc",
		"--id", "a1", "--address", "127.0.0.1:9101"); err != nil {
		t.Fatalf("register through %s with the leader %s stopped: %v", follower.name, leader.name, err)
	}
	if _, err := ctl(zrpcctl, follower.grpcAddr(), "--timeout", "10s", "service", "renew", "ttl.rpc", "t1"); err != nil {
		t.Fatalf("renew through %s with the leader %s stopped: %v", follower.name, leader.name, err)
	}
	resume()
	waitFor(t, 20*time.Second, leader.name+", woken, to hold the write made while it was stopped", func() bool {
		out, err := ctl(zrpcctl, leader.grpcAddr(), "service", "get", "api.rpc", "--consistency", "stale")
		return err == nil && strings.Contains(out, "a1")
	})
}

// waitThreeVoters waits until the members as via sees them are three
// alive: a leader and two voters, and returns the leader's name.
func waitThreeVoters(t *testing.T, zrpcctl string, via *agent) string {
	t.Helper()
	var leader string
	// NAME ADDRESS STATUS ROLE BUILD ZONE
	waitFor(t, 30*time.Second, "three alive members, one leader and two voters", func() bool {
		out, err := via.ctl("members")
		roles := map[string]int{}
		for _, r := range rows(out) {
			if len(r) >= 4 && r[2] == "alive" {
				roles[r[3]]++
				if r[3] == "leader" {
					leader = r[0]
				}
			}
		}
		return err == nil && roles["leader"] == 1 && roles["voter"] == 2 && leader != ""
	})
	return leader
}

// TestServiceRegistersElsewhereWhenItsAgentHangs: a service (examples/user,
// Agents [n2, n3]) registered through n2, which is then stopped: the
// cluster marks n2 failed and the instance critical, and the service,
// whose session stream on n2 stays open, ends it because n2 answers
// neither its keepalives nor a health check, and registers again through
// n3, passing, while n2 is still stopped.
func TestServiceRegistersElsewhereWhenItsAgentHangs(t *testing.T) {
	_, zrpcctl := binaries(t)
	n1, n2, n3 := startThree(t, "--gossip-profile", "local")
	// Three voters, not only three alive members: with n3 still a
	// nonvoter, stopping n2 would leave no quorum.
	waitThreeVoters(t, zrpcctl, n1)
	svc := startBenchUserService(t, n2, n3)
	if err := n2.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer n2.cmd.Process.Signal(syscall.SIGCONT)
	waitFor(t, 30*time.Second, "user.rpc passing again, through n3, with n2 stopped", func() bool {
		out, err := ctl(zrpcctl, n1.grpcAddr(), "service", "get", "user.rpc", "--consistency", "stale")
		for _, r := range rows(out) {
			if len(r) >= 4 && r[2] == "n3" && r[3] == "passing" {
				return err == nil
			}
		}
		return false
	})
	if !strings.Contains(svc.String(), "answered neither a keepalive nor a health check") {
		t.Fatalf("the service's log does not say why its session on n2 ended:\n%s", svc.String())
	}
}
