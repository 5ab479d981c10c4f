// Package netlab gives tests' processes a network of their own: each host
// is a Linux network namespace with one address (10.0.0.1, 10.0.0.2, ...)
// on a bridge that lives in one more namespace, so agents run as separate
// machines would, each with its own ports, and talk across a real kernel
// network stack instead of loopback.
//
// Partitions drop packets silently, as a pulled cable or a dropping
// firewall would: no connection is refused or reset, sockets find out only
// by their own timeouts. A host drops what it receives from a host it is
// cut from by a policy-routing rule (blackhole by source address, looked
// up before the local table), so no packet filter (iptables, nftables, tc)
// is needed: only iproute2's ip and root. Nothing is changed outside the
// lab's namespaces.
//
// Tests and benchmarks only (bench/registry's partition scenario).
package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// namePrefix starts the name of every namespace a lab makes:
// zrpclab-<pid>-<lab>-hub and zrpclab-<pid>-<lab>-<host>.
const namePrefix = "zrpclab-"

// netnsDir is where ip netns keeps the namespaces it names.
const netnsDir = "/run/netns"

// cutPref is the priority of the rules that drop a cut host's packets;
// the local table is looked up after them (localPref).
const (
	cutPref   = "10"
	localPref = "100"
)

// MaxHosts is the most hosts one lab holds (one /24).
const MaxHosts = 250

// Lab is a network of hosts. Its methods may be called from several
// goroutines.
type Lab struct {
	prefix string
	hub    string
	hosts  []*Host

	mu   sync.Mutex
	cuts map[cut]bool
}

// cut is a direction a lab drops: to drops every packet from from.
type cut struct{ from, to int }

// Host is one machine of a lab.
type Host struct {
	// Index is the host's place in the lab, from 0.
	Index int
	// NS is its network namespace's name (for ip netns exec).
	NS string
	// IP is its address, 10.0.0.<Index+1>.
	IP string
}

var labs atomic.Int64

// Available says why this process cannot make a lab, or nil if it can.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("netlab: network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("netlab: iproute2's ip is not installed: %w", err)
	}
	return nil
}

// New makes a lab of n hosts. Labs left by test processes that are gone
// (killed before their Close) are removed first, with whatever still runs
// in them. The caller must Close the lab.
func New(n int) (*Lab, error) {
	if n < 1 || n > MaxHosts {
		return nil, fmt.Errorf("netlab: %d hosts asked for; a lab has 1 to %d", n, MaxHosts)
	}
	if err := Available(); err != nil {
		return nil, err
	}
	removeLeftovers()
	prefix := namePrefix + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(labs.Add(1), 10) + "-"
	l := &Lab{prefix: prefix, hub: prefix + "hub", cuts: map[cut]bool{}}
	if err := l.build(n); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	return l, nil
}

func (l *Lab) build(n int) error {
	if err := run("ip", "netns", "add", l.hub); err != nil {
		return err
	}
	if err := batch(l.hub, "link add br0 type bridge", "link set br0 up", "link set lo up"); err != nil {
		return err
	}
	for i := range n {
		h := &Host{Index: i, NS: l.prefix + strconv.Itoa(i), IP: "10.0.0." + strconv.Itoa(i+1)}
		l.hosts = append(l.hosts, h)
		if err := run("ip", "netns", "add", h.NS); err != nil {
			return err
		}
		port := "h" + strconv.Itoa(i)
		if err := batch(l.hub,
			"link add "+port+" type veth peer name eth0 address "+mac(i)+" netns "+h.NS,
			"link set "+port+" master br0",
			"link set "+port+" up"); err != nil {
			return err
		}
		lines := []string{
			"link set lo up",
			"addr add " + h.IP + "/24 dev eth0",
			"link set eth0 up",
			// Cuts are looked up before the local table, which
			// otherwise answers first for the host's own address.
			"rule add pref " + localPref + " lookup local",
			"rule del pref 0 lookup local",
		}
		// Every host's hardware address is known: a cut also drops the
		// ARP requests it would otherwise need (their route is looked up
		// by source), and a heal must not wait on ARP's retries.
		for j := range n {
			if j != i {
				lines = append(lines, "neigh add 10.0.0."+strconv.Itoa(j+1)+" lladdr "+mac(j)+" dev eth0 nud permanent")
			}
		}
		if err := batch(h.NS, lines...); err != nil {
			return err
		}
	}
	return l.waitUp()
}

// upWait bounds how long New waits for the lab's links to carry packets.
const upWait = 10 * time.Second

// waitUp waits until every link of the lab carries packets: the kernel
// brings a link's carrier up (and gives it its queue) a moment after it
// is set up, up to a second later, and drops what is sent before.
func (l *Lab) waitUp() error {
	deadline := time.Now().Add(upWait)
	for {
		down := l.linksDown()
		if down == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netlab: links still down after %s: %s", upWait, down)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// linksDown names a link of the lab that does not carry packets yet, or
// returns "".
func (l *Lab) linksDown() string {
	check := func(ns string, links ...string) string {
		out, err := exec.Command("ip", "-n", ns, "-o", "link", "show").Output()
		if err != nil {
			return ns + ": " + err.Error()
		}
		for _, link := range links {
			up := false
			for line := range strings.Lines(string(out)) {
				f := strings.Fields(line)
				if len(f) > 1 && strings.TrimSuffix(strings.Split(f[1], "@")[0], ":") == link {
					up = strings.Contains(line, "state UP") && !strings.Contains(line, "qdisc noop")
				}
			}
			if !up {
				return ns + " " + link
			}
		}
		return ""
	}
	ports := []string{"br0"}
	for _, h := range l.hosts {
		if down := check(h.NS, "eth0"); down != "" {
			return down
		}
		ports = append(ports, "h"+strconv.Itoa(h.Index))
	}
	return check(l.hub, ports...)
}

// mac is host i's hardware address (locally administered).
func mac(i int) string { return fmt.Sprintf("02:00:0a:00:00:%02x", i+1) }

// Hosts returns the lab's hosts in order.
func (l *Lab) Hosts() []*Host { return slices.Clone(l.hosts) }

// Host returns host i.
func (l *Lab) Host(i int) *Host { return l.hosts[i] }

// Command returns a command that runs name in the host's namespace. The
// process is name itself (ip netns exec executes it), so signals sent to
// cmd.Process reach it.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// Do runs f on a thread moved into the host's namespace: the sockets f
// opens belong to the host's network and keep to it wherever they are
// used afterwards. The thread goes back to its own namespace after f, or
// exits if it cannot.
func (h *Host) Do(f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		back, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("netlab: %w", err)
			return
		}
		defer back.Close()
		ns, err := os.Open(netnsDir + "/" + h.NS)
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("netlab: %w", err)
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("netlab: setns %s: %w", h.NS, err)
			return
		}
		done <- f()
		if unix.Setns(int(back.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		// Else still locked: the thread exits with this goroutine
		// rather than run others in the lab's namespace.
	}()
	return <-done
}

// Listen listens on the host's network, as net.Listen does.
func (h *Host) Listen(network, address string) (net.Listener, error) {
	var l net.Listener
	err := h.Do(func() (err error) {
		l, err = net.Listen(network, address)
		return err
	})
	return l, err
}

// ListenPacket listens on the host's network, as net.ListenPacket does.
func (h *Host) ListenPacket(network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := h.Do(func() (err error) {
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// DialContext dials from the host's network: a gRPC or HTTP client in the
// test's process can reach the lab's hosts through it.
func (h *Host) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// Partition splits the hosts into groups of indexes, replacing the cuts
// made before: hosts in different groups drop each other's packets, hosts
// in no group still reach every host.
func (l *Lab) Partition(groups ...[]int) error {
	want := map[cut]bool{}
	for gi, g := range groups {
		for _, a := range g {
			if a < 0 || a >= len(l.hosts) {
				return fmt.Errorf("netlab: no host %d in a lab of %d", a, len(l.hosts))
			}
			for gj, other := range groups {
				if gj == gi {
					continue
				}
				for _, b := range other {
					if b >= 0 && b < len(l.hosts) {
						want[cut{from: a, to: b}] = true
					}
				}
			}
		}
	}
	return l.set(want)
}

// Drop makes host to drop every packet from host from (one direction
// only), keeping the other cuts.
func (l *Lab) Drop(from, to int) error {
	if from < 0 || from >= len(l.hosts) || to < 0 || to >= len(l.hosts) || from == to {
		return fmt.Errorf("netlab: cannot drop %d's packets at %d in a lab of %d", from, to, len(l.hosts))
	}
	l.mu.Lock()
	want := map[cut]bool{{from: from, to: to}: true}
	for c := range l.cuts {
		want[c] = true
	}
	l.mu.Unlock()
	return l.set(want)
}

// Heal removes every cut.
func (l *Lab) Heal() error { return l.set(map[cut]bool{}) }

// set makes the lab's cuts exactly want.
func (l *Lab) set(want map[cut]bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	cmds := map[int][]string{}
	for c := range l.cuts {
		if !want[c] {
			cmds[c.to] = append(cmds[c.to], "rule del "+l.rule(c))
		}
	}
	for c := range want {
		if !l.cuts[c] {
			cmds[c.to] = append(cmds[c.to], "rule add "+l.rule(c))
		}
	}
	var errs []error
	for to, lines := range cmds {
		if err := batch(l.hosts[to].NS, lines...); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	l.cuts = want
	return nil
}

// rule is the policy-routing rule by which c.to drops c.from's packets.
func (l *Lab) rule(c cut) string {
	return "pref " + cutPref + " from " + l.hosts[c.from].IP + " iif eth0 blackhole"
}

// Close kills what still runs in the lab's namespaces and removes them.
func (l *Lab) Close() error {
	var errs []error
	for _, h := range l.hosts {
		errs = append(errs, remove(h.NS))
	}
	errs = append(errs, remove(l.hub))
	return errors.Join(errs...)
}

// remove kills the processes in a namespace and deletes it.
func remove(ns string) error {
	if _, err := os.Stat(netnsDir + "/" + ns); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			// Never this process: a thread of it may be in the
			// namespace for Do.
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return run("ip", "netns", "del", ns)
}

// removeLeftovers removes the labs of processes that no longer run.
func removeLeftovers() {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), namePrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			remove(e.Name())
		}
	}
}

// batch runs ip commands in namespace ns, one process for all of them.
func batch(ns string, lines ...string) error {
	if len(lines) == 0 {
		return nil
	}
	cmd := exec.Command("ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("netlab: ip -n %s: %v: %s (commands: %s)", ns, err, strings.TrimSpace(out.String()), strings.Join(lines, "; "))
	}
	return nil
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("netlab: %s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
