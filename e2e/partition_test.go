package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/netlab"
	"github.com/zrpcio/zrpc/internal/testlog"
)

// Agents on a network of their own (internal/netlab): each agent is a
// machine with its own address and the default ports, zrpcctl runs on one
// more, and partitions drop packets silently between the agents' hosts
// while zrpcctl's host still reaches every agent, as a client beside a
// broken switch would.

// labCluster is n agents on lab hosts a0, a1, ... and the lab host the
// test's zrpcctl runs on.
type labCluster struct {
	t      *testing.T
	lab    *netlab.Lab
	agents []*agent
	client *netlab.Host
	voters int // the Raft voters the cluster keeps (--voters, 3 by default)
}

// startLab starts n agents, each on a host of its own, joining the first,
// and waits until the first sees them all alive, one leading, as many
// others voting as --voters (3 unless extra says) allows, and the rest
// nonvoters.
// Without root or iproute2 the test is skipped, except under CI, whose
// machine has both.
func startLab(t *testing.T, n int, extra ...string) *labCluster {
	t.Helper()
	return startLabSpare(t, n, 0, extra...)
}

// startLabSpare is startLab with spare hosts after the agents' (hosts n
// to n+spare-1), for agents to move to; the client host comes last.
func startLabSpare(t *testing.T, n, spare int, extra ...string) *labCluster {
	t.Helper()
	if err := netlab.Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	binaries(t)
	lab, err := netlab.New(n + spare + 1)
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the agents' cleanups: runs after them.
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Error(err)
		}
	})
	c := &labCluster{t: t, lab: lab, client: lab.Host(n + spare), voters: min(n, 3)}
	if i := slices.Index(extra, "--voters"); i >= 0 && i+1 < len(extra) {
		v, err := strconv.Atoi(extra[i+1])
		if err != nil {
			t.Fatalf("--voters %q: %v", extra[i+1], err)
		}
		c.voters = min(n, v)
	}
	for i := range n {
		name := "a" + itoa(i)
		a := &agent{
			t: t, name: name, dataDir: filepath.Join(t.TempDir(), name),
			grpcPort: 8400, raftPort: 8401, gossipPort: 8402, httpPort: 8480,
			extra: extra, log: &testlog.Buffer{}, host: lab.Host(i), via: c.client,
		}
		c.agents = append(c.agents, a)
		if i == 0 {
			a.start()
		} else {
			a.start(c.agents[0].gossipAddr())
		}
	}
	waitFor(t, 30*time.Second, "every agent alive, one leader, the voters and the nonvoters", func() bool { return c.settled(c.agents[0]) })
	return c
}

// addrs is every agent's gRPC address, first's first.
func (c *labCluster) addrs(first int) string {
	list := []string{c.agents[first].grpcAddr()}
	for i, a := range c.agents {
		if i != first {
			list = append(list, a.grpcAddr())
		}
	}
	return strings.Join(list, ",")
}

// ctl runs zrpcctl on the client host against every agent, first's first.
func (c *labCluster) ctl(first int, args ...string) (string, error) {
	_, zrpcctl := binaries(c.t)
	return ctlFrom(c.client, zrpcctl, c.addrs(first), args...)
}

// index returns the index of the agent named name, or -1.
func (c *labCluster) index(name string) int {
	for i, a := range c.agents {
		if a.name == name {
			return i
		}
	}
	return -1
}

// others returns every agent index but i.
func (c *labCluster) others(i int) []int {
	var rest []int
	for j := range c.agents {
		if j != i {
			rest = append(rest, j)
		}
	}
	return rest
}

// member is one row of `zrpcctl members`.
type member struct{ status, role string }

// members returns the members as agent a sees them, by name.
func members(a *agent) (map[string]member, error) {
	out, err := a.ctl("members")
	if err != nil {
		return nil, err
	}
	m := map[string]member{}
	// NAME ADDRESS STATUS ROLE BUILD ZONE
	for _, r := range rows(out) {
		if len(r) >= 4 {
			m[r[0]] = member{status: r[2], role: r[3]}
		}
	}
	return m, nil
}

// settled reports whether agent a sees every agent alive, one of them
// leading, c.voters voting in all, and the rest nonvoters.
func (c *labCluster) settled(a *agent) bool {
	m, err := members(a)
	if err != nil || len(m) != len(c.agents) {
		return false
	}
	roles := map[string]int{}
	for _, x := range m {
		if x.status != "alive" {
			return false
		}
		roles[x.role]++
	}
	return roles["leader"] == 1 && roles["voter"] == c.voters-1 && roles["nonvoter"] == len(c.agents)-c.voters
}

// waitSettled waits until every agent sees every agent alive, one
// leading, the voters and the nonvoters; when says after what, for the
// failure.
func (c *labCluster) waitSettled(when string) {
	c.t.Helper()
	for _, a := range c.agents {
		waitFor(c.t, 60*time.Second, a.name+" sees every agent alive, one leader, the voters and the nonvoters, "+when, func() bool {
			return c.settled(a)
		})
	}
}

// waitInContact waits until agent i is in contact with a leader (its
// status says nothing under "Cut off": a joining agent is cut off until
// the leader's first commit reaches it).
func (c *labCluster) waitInContact(i int) {
	c.t.Helper()
	a := c.agents[i]
	waitFor(c.t, 20*time.Second, a.name+" in contact with a leader", func() bool {
		out, err := a.ctl("status")
		return err == nil && !strings.Contains(out, "Cut off")
	})
}

// leader returns the index of the leader as agent a sees it, or -1.
func (c *labCluster) leader(a *agent) int {
	m, err := members(a)
	if err != nil {
		return -1
	}
	for name, x := range m {
		if x.role == "leader" && x.status == "alive" {
			return c.index(name)
		}
	}
	return -1
}

// checkAlive fails the test if an agent has exited or said it panicked.
func (c *labCluster) checkAlive() {
	c.t.Helper()
	for _, a := range c.agents {
		select {
		case <-a.exited:
			c.t.Errorf("%s exited: %v", a.name, a.exitErr)
		default:
		}
		if log := a.log.String(); strings.Contains(log, "panic:") || strings.Contains(log, "fatal error:") {
			c.t.Errorf("%s panicked", a.name)
		}
	}
}

// registrar registers instances of one service through zrpcctl on the
// client host, one after another, until stopped: the acknowledged ones
// must be in the registry afterwards, whatever happened meanwhile.
type registrar struct {
	stopOnce sync.Once
	stopped  chan struct{}
	done     chan struct{}

	mu    sync.Mutex
	acked []string
	fails int
	took  []time.Duration // each call's, for the log
}

// startRegistrar starts registering instances w0000, w0001, ... of
// service, the k-th through every agent, first(k)'s first. It stops after
// 5,000 or when stopped.
func (c *labCluster) startRegistrar(service string, first func(k int) int) *registrar {
	w := &registrar{stopped: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for k := 0; k < 5000; k++ {
			select {
			case <-w.stopped:
				return
			default:
			}
			id := fmt.Sprintf("w%04d", k)
			start := time.Now()
			_, err := c.ctl(first(k), "--timeout", "10s", "service", "register", service, "--id", id, "--address", "10.0.2.1:"+itoa(10000+k))
			w.mu.Lock()
			w.took = append(w.took, time.Since(start))
			if err == nil {
				w.acked = append(w.acked, id)
			} else {
				w.fails++
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// count is how many registrations were acknowledged so far.
func (w *registrar) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// stop stops the registrar (once; later calls only read) and returns the
// ids acknowledged, the calls that failed, and each call's duration.
func (w *registrar) stop() (acked []string, fails int, took []time.Duration) {
	w.stopOnce.Do(func() { close(w.stopped) })
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acked), w.fails, slices.Clone(w.took)
}

// waitHolds waits until agent a's replica holds every instance id of
// service.
func (c *labCluster) waitHolds(a *agent, service string, ids []string) {
	c.t.Helper()
	waitFor(c.t, 20*time.Second, a.name+" holds every acknowledged registration of "+service, func() bool {
		out, err := a.ctl("service", "get", service, "--consistency", "stale")
		if err != nil {
			return false
		}
		for _, id := range ids {
			if !strings.Contains(out, id+" ") {
				return false
			}
		}
		return true
	})
}

// TestLeaderCutOffPastTheReapComesBackWithEveryAcknowledgedWrite: the
// leader's machine loses the agents' network (packets dropped, nothing
// refused) for longer than failure detection and the dead-node reap,
// while a client that still reaches every agent goes on registering
// through all three, the cut-off leader first. The cut-off agent says so;
// the other two elect a leader and reap it. After the heal it rejoins as
// a voter without a restart, and every registration the client was told
// succeeded is on every agent, the cut-off one too.
func TestLeaderCutOffPastTheReapComesBackWithEveryAcknowledgedWrite(t *testing.T) {
	const reap = 8 * time.Second
	c := startLab(t, 3, "--dead-node-reap", reap.String(), "--stale-read-bound", "2s")
	cut := c.leader(c.agents[0])
	if cut < 0 {
		t.Fatal("no leader")
	}
	l := c.agents[cut]
	rest := c.others(cut)
	for i, a := range c.agents {
		a.mustCtl("service", "register", "before.rpc", "--id", "b"+itoa(i), "--address", "10.0.1.1:"+itoa(9000+i))
	}

	if err := c.lab.Partition([]int{cut}, rest); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	t.Logf("%s, the leader, cut off from %s and %s", l.name, c.agents[rest[0]].name, c.agents[rest[1]].name)

	// The client registers through every agent, the cut-off one first,
	// until the leader left behind has reaped it; a write the client was
	// told succeeded must survive.
	w := c.startRegistrar("during.rpc", func(int) int { return cut })
	defer w.stop()

	waitFor(t, 20*time.Second, l.name+" says it is cut off from the leader", func() bool {
		out, err := l.ctl("status")
		return err == nil && strings.Contains(out, "Cut off")
	})
	// A write through the cut-off agent alone fails saying why, soon
	// enough for a client with other agents to try them.
	if _, err := l.ctl("--timeout", "10s", "service", "register", "alone.rpc", "--id", "x", "--address", "10.0.3.1:1"); err == nil ||
		!strings.Contains(err.Error(), "cut off from the leader") {
		t.Fatalf("a write through %s alone, cut off: %v, want an error saying it is cut off from the leader", l.name, err)
	}
	// A blob put through an agent, the cut-off one first, goes on to the
	// next: the first refused before it could store anything. The next
	// places a shard on every agent its gossip counts alive; while gossip
	// still counts the cut-off one, that shard fails, the block has too
	// few, nothing is committed, and the client starts the put over a
	// second later, when gossip has seen the agent go.
	src := filepath.Join(t.TempDir(), "cut.bin")
	if err := os.WriteFile(src, bytes.Repeat([]byte("zrpc"), 256<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ctl(cut, "--timeout", "10s", "blob", "put", src, "--through-agent"); err != nil {
		t.Fatalf("a blob put through an agent, %s first: %v", l.name, err)
	}
	var newLeader int
	waitFor(t, 20*time.Second, "a new leader on the other side", func() bool {
		newLeader = c.leader(c.agents[rest[0]])
		return newLeader >= 0 && newLeader != cut
	})
	t.Logf("%s leads after %s", c.agents[newLeader].name, time.Since(cutAt).Round(time.Millisecond))
	waitFor(t, reap+30*time.Second, l.name+" reaped: out of the Raft configuration", func() bool {
		out, err := c.agents[newLeader].ctl("raft", "peers")
		return err == nil && !strings.Contains(out, l.name) && strings.Count(out, "voter") >= 2
	})
	reapedAt := time.Since(cutAt)
	t.Logf("%s reaped after %s", l.name, reapedAt.Round(time.Millisecond))
	if w.count() == 0 {
		t.Fatalf("no registration succeeded in %s of partition, through agents that still had a quorum", reapedAt.Round(time.Millisecond))
	}

	if err := c.lab.Heal(); err != nil {
		t.Fatal(err)
	}
	healedAt := time.Now()

	c.waitSettled("after the heal")
	t.Logf("all three agents settled %s after the heal", time.Since(healedAt).Round(time.Millisecond))
	want, fails, took := w.stop()
	waitFor(t, 20*time.Second, l.name+" no longer cut off", func() bool {
		out, err := l.ctl("status")
		return err == nil && !strings.Contains(out, "Cut off")
	})

	slices.Sort(took)
	t.Logf("%d registrations acknowledged, %d failed (or not known to have succeeded) while the partition lasted; zrpcctl's call median %s, max %s",
		len(want), fails, took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
	for _, a := range c.agents {
		c.waitHolds(a, "during.rpc", want)
		out := a.mustCtl("service", "get", "before.rpc")
		for i := range c.agents {
			if !strings.Contains(out, "b"+itoa(i)) {
				t.Errorf("%s lost b%d, registered before the partition:\n%s", a.name, i, out)
			}
		}
	}
	c.checkAlive()
}

// watch runs `zrpcctl service watch service` on the client host against
// every agent, first's first, until the test ends, and returns its
// output.
func (c *labCluster) watch(first int, service string) *testlog.Buffer {
	c.t.Helper()
	_, zrpcctl := binaries(c.t)
	out := &testlog.Buffer{}
	cmd := c.client.Command(zrpcctl, "--addr", c.addrs(first), "service", "watch", service)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	c.t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if c.t.Failed() {
			c.t.Logf("--- zrpcctl service watch %s ---\n%s", service, out.String())
		}
	})
	return out
}

// watchRow is one change a watch printed: REV TYPE SERVICE ID ADDRESS HEALTH.
type watchRow struct {
	rev                      uint64
	typ, id, address, health string
}

// watchRows parses what `zrpcctl service watch` printed, its changes only.
func watchRows(out string) []watchRow {
	var rs []watchRow
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 6 || (f[1] != "PUT" && f[1] != "DELETE") {
			continue
		}
		var rev uint64
		if _, err := fmt.Sscan(f[0], &rev); err != nil {
			continue
		}
		rs = append(rs, watchRow{rev: rev, typ: f[1], id: f[3], address: f[4], health: f[5]})
	}
	return rs
}

// registeredThrough returns the agent and health of user.rpc's instance
// as agent a reads it.
func registeredThrough(a *agent) (agentName, health string) {
	out, err := a.ctl("service", "get", "user.rpc", "--consistency", "stale")
	if err != nil {
		return "", ""
	}
	// ID ADDRESS AGENT HEALTH ...
	for _, r := range rows(out) {
		if len(r) >= 4 {
			return r[2], r[3]
		}
	}
	return "", ""
}

// TestServiceAndWatchMoveOffAnAgentCutOffByARealPartition: a service
// (examples/user) holds its session on a follower, and a watch of it is
// served by the same follower; the follower's machine then loses the
// agents' network, while the service's and the watch's machine still
// reaches every agent. Hearing from no other agent's Raft for about a
// second, the follower knows it is cut off and tells the session at once:
// the service registers again through an agent with a quorum, and the
// watch resumes there (the cut-off replica commits nothing, so a change
// it prints came from the majority); with the default settings, 1.2-1.3 s
// after the cut (10 s when only stale_read_bound and the next keepalive
// told them). The instance is never deleted, through the partition, the
// heal and after.
func TestServiceAndWatchMoveOffAnAgentCutOffByARealPartition(t *testing.T) {
	// No reap during the test: what moves the service is the cut-off.
	c := startLab(t, 3, "--dead-node-reap", "1h")
	leader := c.leader(c.agents[0])
	cut := (leader + 1) % 3
	f := c.agents[cut]
	var rest []*agent
	for _, i := range c.others(cut) {
		rest = append(rest, c.agents[i])
	}
	startBenchUserService(t, f, rest...)
	if through, _ := registeredThrough(c.agents[leader]); through != f.name {
		t.Fatalf("user.rpc registered through %q, want %s, its first agent", through, f.name)
	}
	watch := c.watch(cut, "user.rpc")
	var before uint64
	waitFor(t, 20*time.Second, "the watch prints user.rpc's instance", func() bool {
		rs := watchRows(watch.String())
		if len(rs) > 0 {
			before = rs[len(rs)-1].rev
		}
		return len(rs) > 0
	})

	if err := c.lab.Partition([]int{cut}, c.others(cut)); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	t.Logf("%s (a follower, holding the service's session and the watch) cut off from the other agents", f.name)
	waitFor(t, 30*time.Second, "user.rpc passing again through an agent with a quorum", func() bool {
		through, health := registeredThrough(c.agents[leader])
		return through != "" && through != f.name && health == "passing"
	})
	t.Logf("user.rpc registered through another agent, passing, %s after the cut", time.Since(cutAt).Round(time.Millisecond))
	waitFor(t, 20*time.Second, "the watch prints a change the majority made", func() bool {
		for _, r := range watchRows(watch.String()) {
			if r.rev > before {
				return true
			}
		}
		return false
	})
	t.Logf("the watch printed the majority's change %s after the cut", time.Since(cutAt).Round(time.Millisecond))

	if err := c.lab.Heal(); err != nil {
		t.Fatal(err)
	}
	c.waitSettled("after the heal")
	// f's old session ends after the heal; it holds no instance now.
	waitFor(t, 20*time.Second, "user.rpc passing as every agent reads it", func() bool {
		for _, a := range c.agents {
			if through, health := registeredThrough(a); through == "" || through == f.name || health != "passing" {
				return false
			}
		}
		return true
	})
	time.Sleep(3 * time.Second) // the old session's end, and its consequences, reach the watch
	for _, r := range watchRows(watch.String()) {
		if r.typ == "DELETE" {
			t.Fatalf("the watch saw user.rpc's instance deleted (revision %d): it must never be missing", r.rev)
		}
	}
	c.checkAlive()
}

// statusOf returns agent a's `zrpcctl status -o json`, decoded.
func statusOf(a *agent) (st struct {
	Leader string `json:"leader"`
	Term   string `json:"term"`
	CutOff string `json:"cut_off"`
}, err error) {
	out, err := a.ctl("status", "-o", "json")
	if err == nil {
		err = json.Unmarshal([]byte(out), &st)
	}
	return st, err
}

// TestOneWayLossToAFollowerIsShownAndDisruptsNothing: a follower's
// machine drops every packet from the leader's (a firewall on one side,
// asymmetric routing) while the rest of the network works, so gossip,
// going around through the third agent, counts everyone alive. The
// follower says it is cut off; the leader names it "not answering the
// leader" in its status, where gossip alone said all three were
// reachable; the follower's elections (pre-votes) do not unseat the
// leader; registrations through the follower first succeed elsewhere;
// and after the heal the follower holds every one of them.
func TestOneWayLossToAFollowerIsShownAndDisruptsNothing(t *testing.T) {
	c := startLab(t, 3, "--stale-read-bound", "2s", "--dead-node-reap", "8s")
	li := c.leader(c.agents[0])
	fi := (li + 1) % 3
	l, f := c.agents[li], c.agents[fi]
	before, err := statusOf(l)
	if err != nil || before.Leader != l.name || before.Term == "" {
		t.Fatalf("%s's status before the loss: %+v, %v; want it leading, with a term", l.name, before, err)
	}
	if err := c.lab.Drop(li, fi); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s drops every packet from %s, the leader", f.name, l.name)
	waitFor(t, 20*time.Second, f.name+" says it is cut off from the leader", func() bool {
		st, err := statusOf(f)
		return err == nil && st.CutOff != ""
	})
	waitFor(t, 30*time.Second, l.name+"'s status names "+f.name+" not answering the leader", func() bool {
		out, err := l.ctl("status")
		return err == nil && strings.Contains(out, "2 of 3 reachable; "+f.name+" not answering the leader for ")
	})
	var acked []string
	for k := range 20 {
		id := "o" + itoa(k)
		if _, err := c.ctl(fi, "--timeout", "10s", "service", "register", "oneway.rpc", "--id", id, "--address", "10.0.2.1:"+itoa(10000+k)); err != nil {
			t.Fatalf("register %s through %s first, then the others: %v", id, f.name, err)
		}
		acked = append(acked, id)
	}
	if m, err := members(l); err != nil || m[f.name].status != "alive" {
		t.Fatalf("%s's members: %v %v; want %s alive by gossip (it reaches the others)", l.name, m, err, f.name)
	}
	// Past dead_node_reap: gossip never declared the follower failed, so
	// nothing reaps it.
	time.Sleep(9 * time.Second)
	if err := c.lab.Heal(); err != nil {
		t.Fatal(err)
	}
	c.waitSettled("after the heal")
	waitFor(t, 20*time.Second, l.name+"'s status: 3 of 3 reachable, "+f.name+" in contact", func() bool {
		out, err := l.ctl("status")
		st, serr := statusOf(f)
		return err == nil && serr == nil && strings.Contains(out, "3 of 3 reachable") && st.CutOff == ""
	})
	after, err := statusOf(l)
	if err != nil {
		t.Fatal(err)
	}
	if after.Leader != before.Leader || after.Term != before.Term {
		t.Errorf("leader %s term %s before the loss, %s term %s after: the follower's elections unseated it",
			before.Leader, before.Term, after.Leader, after.Term)
	}
	waitFor(t, 20*time.Second, f.name+" holds every registration made while it was cut off", func() bool {
		out, err := f.ctl("service", "get", "oneway.rpc")
		if err != nil {
			return false
		}
		for _, id := range acked {
			if !strings.Contains(out, id+" ") {
				return false
			}
		}
		return true
	})
	c.checkAlive()
}

// TestAFlappingNetworkLosesNoWriteAndNoInstance: for 20 s one agent after
// another is cut off for 0.5-3 s and let back for 0.5-2.5 s (a flapping
// link, a switch rebooting), shorter than dead_node_reap but often longer
// than the stale read bound and failure detection, while zrpcctl
// registers through each agent in turn and a service (examples/user)
// holds its session on one of them. Every registration zrpcctl was told
// succeeded is on every agent afterwards, the service's instance is never
// deleted (its health may flap with its agent), and the agents settle.
func TestAFlappingNetworkLosesNoWriteAndNoInstance(t *testing.T) {
	c := startLab(t, 3, "--stale-read-bound", "2s", "--dead-node-reap", "8s")
	startBenchUserService(t, c.agents[1], c.agents[2], c.agents[0])
	watch := c.watch(0, "user.rpc")
	waitFor(t, 20*time.Second, "the watch prints user.rpc's instance", func() bool { return len(watchRows(watch.String())) > 0 })
	// A watch of the registrations, moving between agents as they are cut
	// off, must print each change once, in revision order (a change of
	// many instances, as when an agent is marked failed, has one
	// revision).
	writes := c.watch(1, "flap.rpc")
	waitFor(t, 20*time.Second, "the watch of flap.rpc starts", func() bool { return strings.Contains(writes.String(), "snapshot at revision") })

	w := c.startRegistrar("flap.rpc", func(k int) int { return k % len(c.agents) })
	defer w.stop()

	seed := time.Now().UnixNano()
	t.Logf("flapping with seed %d", seed)
	rnd := rand.New(rand.NewPCG(uint64(seed), 0))
	for start := time.Now(); time.Since(start) < 20*time.Second; {
		v := rnd.IntN(len(c.agents))
		if err := c.lab.Partition([]int{v}, c.others(v)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(500+rnd.IntN(2500)) * time.Millisecond)
		if err := c.lab.Heal(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(500+rnd.IntN(2000)) * time.Millisecond)
	}
	c.waitSettled("after the flapping")
	want, fails, _ := w.stop()
	t.Logf("%d registrations acknowledged, %d failed while the network flapped", len(want), fails)
	if len(want) == 0 {
		t.Fatal("no registration succeeded while the network flapped")
	}
	for _, a := range c.agents {
		c.waitHolds(a, "flap.rpc", want)
	}
	for _, r := range watchRows(watch.String()) {
		if r.typ == "DELETE" {
			t.Fatalf("the watch saw user.rpc's instance deleted (revision %d) while no agent was away for dead_node_reap", r.rev)
		}
	}
	waitFor(t, 20*time.Second, "the watch of flap.rpc prints every acknowledged registration", func() bool {
		seen := map[string]bool{}
		for _, r := range watchRows(writes.String()) {
			seen[r.id] = true
		}
		for _, id := range want {
			if !seen[id] {
				return false
			}
		}
		return true
	})
	if n := strings.Count(writes.String(), "snapshot at revision"); n != 1 {
		t.Logf("the watch of flap.rpc was sent %d snapshots: order not checked", n)
	} else {
		var last uint64
		printed := map[string]bool{}
		for _, r := range watchRows(writes.String()) {
			key := fmt.Sprint(r.rev, " ", r.id)
			if r.rev < last || printed[key] {
				t.Fatalf("the watch of flap.rpc printed %s at revision %d after revision %d: a change twice, or out of order", r.id, r.rev, last)
			}
			last, printed[key] = r.rev, true
		}
	}
	c.checkAlive()
}

// TestTwoOfFiveCutOffFailWritesAtOnce: a partition leaves two agents of
// five, the leader one of them, hearing each other but none of the other
// three, while the client reaches all five. The two count themselves cut
// off from any quorum (too few voters answer them for one), not only once
// stale_read_bound has passed (30 s here, so that only the quorum count
// can say it): a write through either fails at once saying so, and not
// applied; zrpcctl given one of them first goes on to the majority, which
// has elected a leader. After the heal every agent agrees again and holds
// the write.
func TestTwoOfFiveCutOffFailWritesAtOnce(t *testing.T) {
	c := startLab(t, 5, "--voters", "5", "--stale-read-bound", "30s", "--dead-node-reap", "1h")
	l := c.leader(c.agents[0])
	if l < 0 {
		t.Fatal("no leader")
	}
	minority := []int{l, (l + 1) % 5}
	var majority []int
	for i := range 5 {
		if !slices.Contains(minority, i) {
			majority = append(majority, i)
		}
	}
	for _, i := range minority {
		c.waitInContact(i)
	}
	if err := c.lab.Partition(minority, majority); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	t.Logf("%s (the leader) and %s cut off from the other three", c.agents[minority[0]].name, c.agents[minority[1]].name)
	for _, i := range minority {
		a := c.agents[i]
		waitFor(t, 20*time.Second, a.name+" says it is cut off from the leader", func() bool {
			out, err := a.ctl("status")
			return err == nil && strings.Contains(out, "Cut off")
		})
		// Which of the two says it first depends on whether gossip has
		// counted the other three failed yet: the agent's own isolation
		// (about a second into the cut) or gossip's quorum count. Either
		// fails the write at once; waiting for a leader would say "no
		// leader answered within".
		_, err := a.ctl("--timeout", "10s", "service", "register", "minority.rpc", "--id", a.name, "--address", "10.0.3.1:1")
		if err == nil || !(strings.Contains(err.Error(), "cut off from the leader: only 1 of the 4 other voters") ||
			strings.Contains(err.Error(), "no cluster leader: 2 of 5 voters reachable")) ||
			!strings.Contains(err.Error(), "the write was not applied") {
			t.Fatalf("a write through %s, in a minority of two: %v, want it failed at once as cut off from any quorum, not applied", a.name, err)
		}
	}
	t.Logf("both minority agents cut off, writes through them failing, %s after the cut", time.Since(cutAt).Round(time.Millisecond))
	if _, err := c.ctl(minority[0], "--timeout", "20s", "service", "register", "moved.rpc", "--id", "m1", "--address", "10.0.3.1:2"); err != nil {
		t.Fatalf("zrpcctl given a minority agent first: %v, want the write through the majority", err)
	}

	if err := c.lab.Heal(); err != nil {
		t.Fatal(err)
	}
	c.waitSettled("after the heal")
	for _, a := range c.agents {
		waitFor(t, 20*time.Second, a.name+" holds the write made through the majority", func() bool {
			out, err := a.ctl("service", "get", "moved.rpc", "--consistency", "stale")
			return err == nil && strings.Contains(out, "m1")
		})
	}
}

// TestANonvoterCutOffFailsWritesAtOnce: a partition cuts a nonvoter of
// five agents (three voters) off from all the others, while the client
// reaches every agent. A nonvoter hears nothing in an election, so it asks
// the voters; none answers, so it counts itself cut off about a second
// into the cut, not once stale_read_bound has passed (30 s here, so that
// only the voters' silence can say it): a write through it fails at once
// saying so, not applied; zrpcctl given it first goes on to the others.
// After the heal it is in contact again and holds the write.
func TestANonvoterCutOffFailsWritesAtOnce(t *testing.T) {
	c := startLab(t, 5, "--stale-read-bound", "30s", "--dead-node-reap", "1h")
	m, err := members(c.agents[0])
	if err != nil {
		t.Fatal(err)
	}
	nv := -1
	for i, a := range c.agents {
		if m[a.name].role == "nonvoter" {
			nv = i
		}
	}
	if nv < 0 {
		t.Fatalf("no nonvoter among %v", m)
	}
	a := c.agents[nv]
	c.waitInContact(nv)
	if err := c.lab.Partition([]int{nv}, c.others(nv)); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	waitFor(t, 20*time.Second, a.name+" says no voter answers it", func() bool {
		out, err := a.ctl("status")
		return err == nil && strings.Contains(out, "it is a nonvoter that knows no leader, and none of the 3 voters")
	})
	// As for voters (TestTwoOfFiveCutOffFailWritesAtOnce), gossip may
	// have marked the voters suspect by now, and its count answers first.
	_, err = a.ctl("--timeout", "10s", "service", "register", "cut.rpc", "--id", a.name, "--address", "10.0.3.1:1")
	if err == nil || !(strings.Contains(err.Error(), "it is a nonvoter that knows no leader, and none of the 3 voters") ||
		strings.Contains(err.Error(), "no cluster leader: 0 of 3 voters reachable") ||
		strings.Contains(err.Error(), "no cluster leader: 1 of 3 voters reachable")) ||
		!strings.Contains(err.Error(), "the write was not applied") {
		t.Fatalf("a write through %s, a nonvoter no voter answers: %v, want it failed at once as cut off, not applied", a.name, err)
	}
	t.Logf("%s cut off, writes through it failing, %s after the cut", a.name, time.Since(cutAt).Round(time.Millisecond))
	if _, err := c.ctl(nv, "--timeout", "20s", "service", "register", "moved.rpc", "--id", "m1", "--address", "10.0.3.1:2"); err != nil {
		t.Fatalf("zrpcctl given the cut-off nonvoter first: %v, want the write through another agent", err)
	}

	if err := c.lab.Heal(); err != nil {
		t.Fatal(err)
	}
	c.waitSettled("after the heal")
	waitFor(t, 20*time.Second, a.name+" in contact again and holding the write", func() bool {
		st, err := a.ctl("status")
		if err != nil || strings.Contains(st, "Cut off") {
			return false
		}
		out, err := a.ctl("service", "get", "moved.rpc")
		return err == nil && strings.Contains(out, "m1")
	})
}
