package e2e

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/testwait"
)

// TestKillingTheLeaderDuringMembershipChanges kills the leader with
// SIGKILL, again and again, while a new agent joins (added as a nonvoter,
// then promoted once the dead leader is reaped) and while writes go on.
// The killed leader is either left for dead, restarted at once on its data
// dir, or restarted under its name with an emptied data dir; a voter is
// killed in turn to bring the cluster back to three agents. After each
// round the Raft configuration is exactly the agents that run, three of
// them voters, every registration zrpcctl saw acknowledged is in the
// registry, and no agent has exited.
func TestKillingTheLeaderDuringMembershipChanges(t *testing.T) {
	_, zrpcctl := binaries(t)
	fast := []string{"--gossip-profile", "local", "--dead-node-reap", "2s"}
	n1, n2, n3 := startThree(t, fast...)
	alive := []*agent{n1, n2, n3}

	w := &ackedWriter{zrpcctl: zrpcctl}
	w.target(alive)
	stopWriter := w.run()
	defer stopWriter()

	converge := func(round int) *agent {
		t.Helper()
		return convergeOn(t, zrpcctl, round, alive)
	}
	converge(0)

	const rounds = 5
	for round := 1; round <= rounds; round++ {
		leader := converge(round)
		joinVia := alive[0]
		if joinVia == leader {
			joinVia = alive[1]
		}
		m := newAgent(t, fmt.Sprintf("m%d", round), fast...)
		m.start(joinVia.gossipAddr())
		// The leader is adding m (as a nonvoter) as it dies.
		leader.kill()
		alive = slices.DeleteFunc(alive, func(a *agent) bool { return a == leader })
		alive = append(alive, m)
		w.target(alive)

		switch round % 3 {
		case 1: // left for dead: reaped, and m promoted in its place
		case 2: // back at once on its data dir
			leader.start(joinVia.gossipAddr())
			alive = append(alive, leader)
		case 0: // back at once under its name, its data dir emptied
			if err := os.RemoveAll(leader.dataDir); err != nil {
				t.Fatal(err)
			}
			leader.start(joinVia.gossipAddr())
			alive = append(alive, leader)
		}
		w.target(alive)
		if len(alive) > 3 {
			// Four agents, one a nonvoter: a voter killed now is reaped
			// and the nonvoter promoted.
			now := converge(round)
			victim := alive[0]
			if victim == now {
				victim = alive[1]
			}
			victim.kill()
			alive = slices.DeleteFunc(alive, func(a *agent) bool { return a == victim })
			w.target(alive)
		}
	}
	leader := converge(rounds + 1)
	stopWriter()
	acked := w.acknowledged()
	if len(acked) == 0 {
		t.Fatal("no registration was acknowledged while the leaders were killed")
	}
	checkAcknowledged(t, zrpcctl, leader, acked)
	t.Logf("%d registrations acknowledged across %d leaders killed, all in the registry", len(acked), rounds)
}

// convergeOn waits until the Raft configuration, as the leader lists it,
// is exactly the agents in alive, min(3, len(alive)) of them voters, and
// returns the leader. It fails the test if an agent of alive has exited.
func convergeOn(t *testing.T, zrpcctl string, round int, alive []*agent) *agent {
	t.Helper()
	want := make([]string, len(alive))
	for i, a := range alive {
		want[i] = a.name
	}
	sort.Strings(want)
	var leader *agent
	var last, exited string
	testwait.ForExplained(t, 40*time.Second, fmt.Sprintf("round %d: the Raft configuration to be %v with %d voters", round, want, min(3, len(want))),
		func() bool {
			for _, a := range alive {
				select {
				case <-a.exited:
					exited = fmt.Sprintf("%s exited: %v", a.name, a.exitErr)
					return true
				default:
				}
			}
			leader, last = raftConfigIs(zrpcctl, alive, want)
			return leader != nil
		}, func() string { return "; last seen:\n" + last })
	if exited != "" {
		t.Fatalf("round %d: %s", round, exited)
	}
	return leader
}

// raftConfigIs asks the agents for the Raft peers and returns the leader
// if the configuration is want with min(3, len(want)) voters and every
// agent of alive agrees on who leads; else nil and what it saw.
func raftConfigIs(zrpcctl string, alive []*agent, want []string) (*agent, string) {
	var leaderName string
	var seen strings.Builder
	for _, a := range alive {
		out, err := ctl(zrpcctl, a.grpcAddr(), "raft", "peers")
		fmt.Fprintf(&seen, "%s: %v\n%s", a.name, err, out)
		if err != nil {
			return nil, seen.String()
		}
		// ID ADDRESS SUFFRAGE LEADER LAST_INDEX
		var ids []string
		voters, lead := 0, ""
		for _, r := range rows(out) {
			if len(r) < 5 || r[4] == "unreachable" {
				return nil, seen.String()
			}
			ids = append(ids, r[0])
			if r[2] == "voter" {
				voters++
			}
			if r[3] == "yes" {
				lead = r[0]
			}
		}
		sort.Strings(ids)
		if !slices.Equal(ids, want) || voters != min(3, len(want)) || lead == "" || (leaderName != "" && lead != leaderName) {
			return nil, seen.String()
		}
		leaderName = lead
	}
	for _, a := range alive {
		if a.name == leaderName {
			return a, seen.String()
		}
	}
	return nil, seen.String()
}

// checkAcknowledged checks, through the leader (a linearizable read), that
// every acknowledged instance id of kill.rpc is registered.
func checkAcknowledged(t *testing.T, zrpcctl string, leader *agent, acked []string) {
	t.Helper()
	out, err := ctl(zrpcctl, leader.grpcAddr(), "service", "get", "kill.rpc")
	if err != nil {
		t.Fatalf("service get kill.rpc on the leader %s: %v", leader.name, err)
	}
	have := map[string]bool{}
	for _, r := range rows(out) {
		have[r[0]] = true
	}
	var lost []string
	for _, id := range acked {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged registrations lost: %v\n%s", len(lost), len(acked), lost, out)
	}
}

// ackedWriter registers instances of kill.rpc one after the other through
// the agents it is aimed at (zrpcctl fails over between them), and keeps
// the ids of those zrpcctl reported registered.
type ackedWriter struct {
	zrpcctl string
	mu      sync.Mutex
	addrs   string
	acked   []string
}

func (w *ackedWriter) target(agents []*agent) {
	addrs := make([]string, len(agents))
	for i, a := range agents {
		addrs[i] = a.grpcAddr()
	}
	w.mu.Lock()
	w.addrs = strings.Join(addrs, ",")
	w.mu.Unlock()
}

func (w *ackedWriter) acknowledged() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acked)
}

// run starts writing; the function it returns stops and waits, and may
// be called again.
func (w *ackedWriter) run() (stop func()) {
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			w.mu.Lock()
			addrs := w.addrs
			w.mu.Unlock()
			id := fmt.Sprintf("w%d", i)
			if _, err := ctl(w.zrpcctl, addrs, "--timeout", "10s", "service", "register", "kill.rpc", "--id", id, "--address", fmt.Sprintf("127.0.0.1:%d", 10000+i)); err == nil {
				w.mu.Lock()
				w.acked = append(w.acked, id)
				w.mu.Unlock()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		<-finished
	}
}

// TestAVoterRestartedNonVoterWhileAnotherIsDownKeepsTheClusterWritable:
// of three voters, n-victim is killed, and another is killed and started
// again with --non-voter. The leader does not demote it while the victim
// is down (the leader and the victim would be the only voters left, and
// need each other: no write, nor the victim's reap, could commit, and no
// leader could be elected until the victim came back); it says so, and
// writes go on. Once the victim is back the agent is demoted.
func TestAVoterRestartedNonVoterWhileAnotherIsDownKeepsTheClusterWritable(t *testing.T) {
	_, zrpcctl := binaries(t)
	fast := []string{"--gossip-profile", "local", "--dead-node-reap", "1h"}
	n1, n2, n3 := startThree(t, fast...)
	all := []*agent{n1, n2, n3}
	leader := convergeOn(t, zrpcctl, 0, all)
	var others []*agent
	for _, a := range all {
		if a != leader {
			others = append(others, a)
		}
	}
	victim, changed := others[0], others[1]
	victim.kill()
	waitFor(t, 20*time.Second, leader.name+" sees "+victim.name+" failed", func() bool {
		out, err := leader.ctl("members")
		for _, r := range rows(out) {
			if err == nil && len(r) >= 3 && r[0] == victim.name && r[2] == "failed" {
				return true
			}
		}
		return false
	})
	changed.kill()
	changed.extra = append(slices.Clone(changed.extra), "--non-voter")
	// The two left elect a leader; the test needs the one not set
	// non_voter to lead (a leader never demotes itself).
	for attempt := 0; ; attempt++ {
		changed.start(leader.gossipAddr())
		var lead string
		waitFor(t, 20*time.Second, "a leader among "+leader.name+" and "+changed.name, func() bool {
			out, err := leader.ctl("raft", "peers")
			for _, r := range rows(out) {
				if err == nil && len(r) >= 4 && r[3] == "yes" {
					lead = r[0]
				}
			}
			return lead != ""
		})
		if lead == leader.name {
			break
		}
		if attempt == 4 {
			t.Skipf("%s, set non_voter, won the election 5 times in a row", changed.name)
		}
		changed.kill()
	}
	var peers string
	waitFor(t, 20*time.Second, leader.name+" says why it does not demote "+changed.name+", or demotes it", func() bool {
		peers, _ = leader.ctl("raft", "peers")
		return strings.Contains(leader.log.String(), "not demoting a voter set non_voter yet") ||
			strings.Contains(peers, "nonvoter")
	})
	if strings.Contains(peers, "nonvoter") {
		t.Fatalf("%s was demoted while %s is down: the voters left need each other\n%s", changed.name, victim.name, peers)
	}
	waitFor(t, 15*time.Second, "a write through "+leader.name+" with "+victim.name+" down", func() bool {
		_, err := leader.ctl("--timeout", "3s", "service", "register", "after.rpc", "--id", "a1", "--address", "127.0.0.1:9001")
		return err == nil
	})

	victim.start(leader.gossipAddr())
	waitFor(t, 30*time.Second, changed.name+" demoted once "+victim.name+" is back", func() bool {
		out, err := leader.ctl("raft", "peers")
		voters, demoted := 0, false
		for _, r := range rows(out) {
			if len(r) >= 3 && r[2] == "voter" {
				voters++
			}
			if len(r) >= 3 && r[0] == changed.name && r[2] == "nonvoter" {
				demoted = true
			}
		}
		return err == nil && voters == 2 && demoted
	})
	if _, err := leader.ctl("service", "register", "after.rpc", "--id", "a2", "--address", "127.0.0.1:9002"); err != nil {
		t.Fatalf("a write after the demotion: %v", err)
	}
}
