package connlimit

import (
	"net"
	"sync"
	"testing"
	"time"
)

// serve accepts on ln until it closes, keeping the connections open and
// handing them out on the channel.
func serve(t *testing.T, ln net.Listener) <-chan net.Conn {
	t.Helper()
	out := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(out)
				return
			}
			out <- c
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return out
}

// dialFrom connects to addr from the loopback IP from.
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Skipf("cannot dial from %s (%v)", from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer reports whether the server side closed c (a read ends
// with EOF or a reset, not a timeout).
func closedByServer(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return err != nil // io.EOF, or a reset
}

// TestAHostPastItsBoundIsRefusedAndOthersAreNot: two connections from
// 127.0.0.1 are served, the third is closed at once and reported; one
// from 127.0.0.2 is served meanwhile; once one of the first two closes,
// 127.0.0.1 may connect again.
func TestAHostPastItsBoundIsRefusedAndOthersAreNot(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var refusals []string
	ln := Wrap(inner, 2, func(host string, limit int) {
		mu.Lock()
		defer mu.Unlock()
		refusals = append(refusals, host)
	}).(*Listener)
	accepted := serve(t, ln)
	addr := inner.Addr().String()

	a1, a2 := dialFrom(t, "127.0.0.1", addr), dialFrom(t, "127.0.0.1", addr)
	s1, s2 := <-accepted, <-accepted
	extra := dialFrom(t, "127.0.0.1", addr)
	if !closedByServer(extra) {
		t.Fatal("a third connection from 127.0.0.1 was not closed")
	}
	other := dialFrom(t, "127.0.0.2", addr)
	s3 := <-accepted
	if closedByServer(other) {
		t.Fatal("the connection from 127.0.0.2 was closed")
	}
	if n := ln.Open("127.0.0.1"); n != 2 {
		t.Errorf("127.0.0.1 holds %d open, want 2", n)
	}
	mu.Lock()
	if len(refusals) != 1 || refusals[0] != "127.0.0.1" {
		t.Errorf("refusals reported: %v, want one of 127.0.0.1", refusals)
	}
	mu.Unlock()

	s1.Close()
	s1.Close() // a second Close gives no second slot back
	a1.Close()
	again := dialFrom(t, "127.0.0.1", addr)
	s4 := <-accepted
	if closedByServer(again) {
		t.Fatal("a connection from 127.0.0.1 after one of its two closed was closed")
	}
	if n := ln.Open("127.0.0.1"); n != 2 {
		t.Errorf("127.0.0.1 holds %d open after one closed and one came, want 2", n)
	}
	for _, c := range []net.Conn{s2, s3, s4, a2} {
		c.Close()
	}
}

func TestNoBoundReturnsTheListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	if Wrap(inner, 0, nil) != inner {
		t.Error("Wrap with no bound wrapped the listener")
	}
}
