package dns

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// TestDNSRefusesTCPConnectionsBeyondItsCap: with 8 TCP connections held
// open, each further one is closed without an answer, UDP still answers,
// and once the 8 close new connections are served again.
func TestDNSRefusesTCPConnectionsBeyondItsCap(t *testing.T) {
	const max, extra = 8, 300
	s, err := Start("127.0.0.1:0", Config{Domain: "zrpc.", MaxTCPConnections: max, TCPIdleTimeout: time.Minute,
		Registry: fakeRegistry{"user.rpc": {passing("user.rpc", "a", "10.0.0.1:80")}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := new(dns.Msg)
	m.SetQuestion("user.rpc.service.zrpc.", dns.TypeA)
	// ask sends m on a new TCP connection, left open; the error is the
	// server's refusal.
	ask := func() (*dns.Conn, error) {
		c, err := dns.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if err := c.WriteMsg(m); err != nil {
			return c, err
		}
		resp, err := c.ReadMsg()
		if err == nil && len(resp.Answer) != 1 {
			t.Fatalf("TCP answer %v", resp)
		}
		return c, err
	}
	var held []*dns.Conn
	for range max {
		c, err := ask()
		if err != nil {
			t.Fatalf("connection %d of %d: %v", len(held)+1, max, err)
		}
		held = append(held, c)
	}
	refused := 0
	for range extra {
		c, err := ask()
		if err != nil && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isConnError(err)) {
			refused++
		} else if err != nil {
			t.Fatalf("connection beyond the cap: %v, want it closed", err)
		}
		c.Close()
	}
	if refused != extra {
		t.Fatalf("%d of %d connections beyond the cap of %d were served", extra-refused, extra, max)
	}
	resp, _, err := (&dns.Client{Net: "udp", Timeout: 5 * time.Second}).Exchange(m, s.Addr())
	if err != nil || len(resp.Answer) != 1 {
		t.Fatalf("UDP while TCP is full: %v %v", resp, err)
	}
	for _, c := range held {
		c.Close()
	}
	// The server sees the closes a moment later: retry until served.
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := ask()
		c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the held connections closed, a new one is still refused: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// isConnError reports whether err is the connection's failure (a reset).
func isConnError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op)
}

// TestDNSClosesATCPConnectionAfterItsQuestionsOrIdleTime: a connection
// gets maxTCPQueries answers, then is closed; one that asks nothing after
// an answer is closed after the idle timeout.
func TestDNSClosesATCPConnectionAfterItsQuestionsOrIdleTime(t *testing.T) {
	s, err := Start("127.0.0.1:0", Config{Domain: "zrpc.", TCPIdleTimeout: 200 * time.Millisecond,
		Registry: fakeRegistry{"user.rpc": {passing("user.rpc", "a", "10.0.0.1:80")}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := new(dns.Msg)
	m.SetQuestion("user.rpc.service.zrpc.", dns.TypeA)
	c, err := dns.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	answered := 0
	for i := range maxTCPQueries + 1 {
		m.Id = uint16(i)
		if err := c.WriteMsg(m); err != nil {
			break
		}
		if _, err := c.ReadMsg(); err != nil {
			break
		}
		answered++
	}
	if answered != maxTCPQueries {
		t.Fatalf("%d answers on one connection, want %d then the connection closed", answered, maxTCPQueries)
	}
	idle, err := dns.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.SetDeadline(time.Now().Add(30 * time.Second))
	if err := idle.WriteMsg(m); err != nil {
		t.Fatal(err)
	}
	if _, err := idle.ReadMsg(); err != nil {
		t.Fatal(err)
	}
	// Nothing more is asked: the server closes the connection (a read
	// ends with an error long before the 30 s deadline).
	start := time.Now()
	if _, err := idle.ReadMsg(); err == nil {
		t.Fatal("an answer to no question")
	}
	if time.Since(start) > 25*time.Second {
		t.Fatal("the idle connection was not closed by the server")
	}
}

func TestDNSRefusesNegativeTCPLimits(t *testing.T) {
	for _, cfg := range []Config{{MaxTCPConnections: -1}, {TCPIdleTimeout: -time.Second}} {
		cfg.Domain, cfg.Registry = "zrpc.", fakeRegistry{}
		if s, err := Start("127.0.0.1:0", cfg); err == nil {
			s.Close()
			t.Errorf("Start with %d connections, idle %s: no error", cfg.MaxTCPConnections, cfg.TCPIdleTimeout)
		}
	}
}

// TestDNSClosesATCPConnectionThatDoesNotReadItsAnswers: a client that
// asks many questions of a large service over TCP and reads none of the
// answers has its connection closed once a write waits too long, so that
// it holds its slot no longer, and Close returns.
func TestDNSClosesATCPConnectionThatDoesNotReadItsAnswers(t *testing.T) {
	reg := &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{"big.rpc": manyInstances("big.rpc", 3000)}}
	s, err := Start("127.0.0.1:0", Config{Domain: "zrpc.", MaxTCPConnections: 1, TCPIdleTimeout: time.Minute, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	// A small receive buffer: the answers, about 64 KB each, fill it and
	// the server's send buffer long before the last question.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	nc, err := d.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	// Close runs while the client still reads nothing (cleanups run last
	// first).
	t.Cleanup(func() {
		closed := make(chan struct{})
		go func() { s.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(time.Minute):
			t.Error("Close still waits a minute later for a client that reads nothing")
		}
	})
	stalled := &dns.Conn{Conn: nc}
	stalled.SetDeadline(time.Now().Add(time.Minute))
	m := new(dns.Msg)
	m.SetQuestion("big.rpc.service.zrpc.", dns.TypeSRV)
	for i := range maxTCPQueries {
		m.Id = uint16(i)
		if err := stalled.WriteMsg(m); err != nil {
			break // the server closed it already
		}
	}
	// The one slot comes free: a new connection is answered.
	a := new(dns.Msg)
	a.SetQuestion("7f000001.addr.zrpc.", dns.TypeA)
	testwait.For(t, 30*time.Second, "a TCP answer while a client that reads nothing held the only slot", func() bool {
		c, err := dns.Dial("tcp", s.Addr())
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if c.WriteMsg(a) != nil {
			return false
		}
		resp, err := c.ReadMsg()
		return err == nil && len(resp.Answer) == 1
	})
}
