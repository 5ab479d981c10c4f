// Package testport finds ports for tests that must name a port before
// anything binds it (agents that share one gossip port across addresses,
// a DNS port set in a config). It picks them below the kernel's ephemeral
// range: a listener on port 0 (an agent's own, another test's) is never
// given such a port between the check and the bind, as one picked by
// listening on port 0 and closing could be.
package testport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// span is how many ports below the ephemeral range are tried from.
const span = 10000

// handedOut are the ports Free returned to tests still running in this
// process: none is returned twice, since the agent it went to may be down
// for a moment (killed, to be restarted on the same port) when another
// test asks, and would find it taken when it comes back. A port is given
// back when the test that asked for it ends. Test binaries of other
// packages run at the same time (go test ./...) and pick from the same
// range: each port handed out is also reserved with a lock on a file of
// its own (reserve), which they respect, and which the kernel drops if
// the process dies.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// Free returns a port free for TCP and UDP on each of ips (127.0.0.1 if
// none is given), below the ephemeral range, that no other call returned
// to a test still running.
func Free(t testing.TB, ips ...string) int {
	t.Helper()
	if len(ips) == 0 {
		ips = []string{"127.0.0.1"}
	}
	low := ephemeralLow()
	for range 50 {
		port := low - 1 - rand.IntN(min(span, low-1025))
		handedOut.Lock()
		if handedOut.ports[port] {
			handedOut.Unlock()
			continue
		}
		release, ok := reserve(port)
		if ok && free(ips, port) {
			handedOut.ports[port] = true
			handedOut.Unlock()
			t.Cleanup(func() {
				handedOut.Lock()
				delete(handedOut.ports, port)
				handedOut.Unlock()
				release()
			})
			return port
		}
		if ok {
			release()
		}
		handedOut.Unlock()
	}
	t.Fatalf("testport: no port below %d free for TCP and UDP on all of %v", low, ips)
	return 0
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default where it cannot be read).
func ephemeralLow() int {
	const linuxDefault = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return linuxDefault
	}
	var low, high int
	if _, err := fmt.Sscan(string(b), &low, &high); err != nil || low <= 2048 {
		return linuxDefault
	}
	return low
}

// free reports whether TCP and UDP port is free on every one of ips.
func free(ips []string, port int) bool {
	for _, ip := range ips {
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return false
		}
		l.Close()
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		u.Close()
	}
	return true
}

// lockDir holds one lock file per port reserved by any test process.
var lockDir = filepath.Join(os.TempDir(), "zrpc-testport")

// reserve takes port for this process until release: an exclusive lock
// on lockDir/<port>, which another process's reserve of the port finds
// held (ok false). Where no lock can be made it reserves nothing and
// says ok: the in-process bookkeeping still holds.
func reserve(port int) (release func(), ok bool) {
	if err := os.MkdirAll(lockDir, 0o777); err != nil {
		return func() {}, true
	}
	f, err := os.OpenFile(filepath.Join(lockDir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return func() {}, true
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return func() { f.Close() }, true // closing drops the lock
}

// Unused returns an address on 127.0.0.1 at a port Free picked: nothing
// listens there while the test runs, so a connection to it is refused,
// and no listener on port 0 is given the port meanwhile (as one taken
// by listening on port 0 and closing could be).
func Unused(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(Free(t)))
}
