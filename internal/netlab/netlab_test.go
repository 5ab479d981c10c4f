package netlab

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// newLab makes a lab of n hosts closed with the test. Without root or ip
// the test is skipped, except under CI, whose machine has both.
func newLab(t *testing.T, n int) *Lab {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	l, err := New(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

// serve accepts connections on host h's port 9000 and closes each.
func serve(t *testing.T, h *Host) string {
	t.Helper()
	ln, err := h.Listen("tcp", h.IP+":9000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// dial connects from host h to addr, giving up after 5 s (a loaded
// machine may take its time), and says how it went.
func dial(h *Host, addr string) error { return dialWithin(h, addr, 5*time.Second) }

// silent is how long a dial across a partition waits for an answer that
// must not come.
const silent = 500 * time.Millisecond

// dialWithin connects from host h to addr within d.
func dialWithin(h *Host, addr string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c, err := h.DialContext(ctx, "tcp", addr)
	if err == nil {
		c.Close()
	}
	return err
}

// timedOut reports whether a dial failed by its deadline: the context's
// or the socket's, whichever the dialer saw first.
func timedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestHostsReachEachOtherEachWithItsOwnPorts(t *testing.T) {
	l := newLab(t, 3)
	addr := serve(t, l.Host(1))
	for _, from := range []int{0, 2} {
		if err := dial(l.Host(from), addr); err != nil {
			t.Fatalf("host %d cannot reach host 1: %v", from, err)
		}
	}
	// Each host has its own ports: the same port is free on another.
	ln, err := l.Host(2).Listen("tcp", l.Host(2).IP+":9000")
	if err != nil {
		t.Fatalf("port 9000 on host 2 while host 1 listens on its own: %v", err)
	}
	ln.Close()
	out, err := l.Host(0).Command("ip", "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "10.0.0.1/24") {
		t.Fatalf("host 0's eth0: %v: %s", err, out)
	}
}

func TestPartitionDropsPacketsSilentlyUntilHealed(t *testing.T) {
	l := newLab(t, 4)
	addr := serve(t, l.Host(1))
	if err := l.Partition([]int{0}, []int{1, 2}); err != nil {
		t.Fatal(err)
	}
	err := dialWithin(l.Host(0), addr, silent)
	if !timedOut(err) {
		// Refused or unreachable would be a loud partition.
		t.Fatalf("dial across the partition: %v, want no answer until the deadline", err)
	}
	if err := dial(l.Host(2), addr); err != nil {
		t.Fatalf("host 2, on host 1's side: %v", err)
	}
	if err := dial(l.Host(3), addr); err != nil {
		t.Fatalf("host 3, in no group: %v", err)
	}
	// A new partition replaces the old one.
	if err := l.Partition([]int{0, 1}, []int{2}); err != nil {
		t.Fatal(err)
	}
	if err := dial(l.Host(0), addr); err != nil {
		t.Fatalf("host 0, now on host 1's side: %v", err)
	}
	if err := dialWithin(l.Host(2), addr, silent); !timedOut(err) {
		t.Fatalf("host 2, now across the partition: %v", err)
	}
	if err := l.Heal(); err != nil {
		t.Fatal(err)
	}
	for _, from := range []int{0, 2, 3} {
		if err := dial(l.Host(from), addr); err != nil {
			t.Fatalf("host %d after the heal: %v", from, err)
		}
	}
	out, err := l.Host(1).Command("ip", "rule", "show", "pref", cutPref).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("rules left on host 1 after the heal: %v: %s", err, out)
	}
}

func TestDropIsOneWay(t *testing.T) {
	l := newLab(t, 2)
	if err := l.Drop(0, 1); err != nil {
		t.Fatal(err)
	}
	got := func(from, to int, wait time.Duration) bool {
		pc, err := l.Host(to).ListenPacket("udp", l.Host(to).IP+":9001")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		err = l.Host(from).Do(func() error {
			c, err := net.Dial("udp", l.Host(to).IP+":9001")
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("hello"))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(wait))
		_, _, err = pc.ReadFrom(make([]byte, 16))
		return err == nil
	}
	if got(0, 1, silent) {
		t.Fatal("host 1 received a datagram from host 0, whose packets it drops")
	}
	if !got(1, 0, 5*time.Second) {
		t.Fatal("host 0 did not receive host 1's datagram: the drop is one way")
	}
	if err := l.Drop(1, 1); err == nil {
		t.Fatal("a host dropping its own packets was accepted")
	}
	if err := l.Partition([]int{0}, []int{7}); err == nil {
		t.Fatal("a partition naming a host the lab does not have was accepted")
	}
}

func TestNewRemovesTheLabsOfGoneProcesses(t *testing.T) {
	if err := Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	// A pid no process has: the first from the top that kill(0) says is
	// free.
	pid := 0
	for p := 4_000_000; p > 3_000_000; p-- {
		if err := syscall.Kill(p, 0); errors.Is(err, syscall.ESRCH) {
			pid = p
			break
		}
	}
	if pid == 0 {
		t.Skip("no free pid found")
	}
	name := namePrefix + strconv.Itoa(pid) + "-1-hub"
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { remove(name) })
	newLab(t, 1)
	if _, err := os.Stat(netnsDir + "/" + name); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the lab of gone process %d is still there: %v", pid, err)
	}
}
