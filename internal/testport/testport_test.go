package testport

import (
	"net"
	"os"
	"strconv"
	"testing"
)

func TestFreeIsBelowTheEphemeralRangeAndBindable(t *testing.T) {
	low := ephemeralLow()
	for range 20 {
		port := Free(t, "127.0.0.1", "127.0.0.2")
		if port >= low || port < 1024 {
			t.Fatalf("port %d, want one in [1024, %d)", port, low)
		}
		for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
			addr := net.JoinHostPort(ip, strconv.Itoa(port))
			l, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatalf("TCP %s: %v", addr, err)
			}
			u, err := net.ListenPacket("udp", addr)
			if err != nil {
				t.Fatalf("UDP %s: %v", addr, err)
			}
			l.Close()
			u.Close()
		}
	}
}

func TestFreeSkipsATakenPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	if free([]string{"127.0.0.1"}, taken) {
		t.Fatalf("port %d, listened on, reported free", taken)
	}
}

// TestFreeNeverReturnsAPortTwice: a port handed out stays the test's,
// even while nothing is bound to it (its agent killed, to come back on
// it).
func TestFreeNeverReturnsAPortTwice(t *testing.T) {
	seen := map[int]bool{}
	for range 500 {
		port := Free(t)
		if seen[port] {
			t.Fatalf("port %d returned twice", port)
		}
		seen[port] = true
	}
}

// TestReserveHoldsAPortAgainstOtherProcesses: a port reserved is refused
// to another reservation (another test binary's, as another open file
// description is) until released, then given again.
func TestReserveHoldsAPortAgainstOtherProcesses(t *testing.T) {
	port := ephemeralLow() - 1 - os.Getpid()%1000
	release, ok := reserve(port)
	if !ok {
		t.Skipf("port %d is reserved by another test process", port)
	}
	if _, again := reserve(port); again {
		t.Fatalf("port %d reserved twice", port)
	}
	release()
	release2, ok := reserve(port)
	if !ok {
		t.Fatalf("port %d not reservable after its release", port)
	}
	release2()
}
