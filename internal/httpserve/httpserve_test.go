package httpserve

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/testwait"
)

// serve runs New(ok) on loopback, with the idle timeout given, and
// returns its address.
func serve(t *testing.T, idle time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }), nil)
	if idle > 0 {
		srv.IdleTimeout = idle
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// exchange sends raw on a new connection and returns the status line of
// the answer and the connection.
func exchange(t *testing.T, addr, raw string) (string, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	resp.Body.Close()
	return resp.Status, c, br
}

func TestHeadersBeyondTheLimitAreRefused(t *testing.T) {
	addr := serve(t, 0)
	big := strings.Repeat("a", 2*MaxHeaderBytes)
	status, _, _ := exchange(t, addr, "GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: "+big+"\r\n\r\n")
	if !strings.HasPrefix(status, "431") {
		t.Fatalf("headers of %d bytes answered %q, want 431", len(big), status)
	}
	status, _, _ = exchange(t, addr, "GET / HTTP/1.1\r\nHost: localhost\r\nX-Small: "+big[:1024]+"\r\n\r\n")
	if !strings.HasPrefix(status, "200") {
		t.Fatalf("headers of 1 KiB answered %q, want 200", status)
	}
}

// TestIdleConnectionIsClosed: a kept-alive connection that asks nothing
// more is closed by the server (here after a shortened idle timeout).
func TestIdleConnectionIsClosed(t *testing.T) {
	addr := serve(t, 200*time.Millisecond)
	status, c, br := exchange(t, addr, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
	if !strings.HasPrefix(status, "200") {
		t.Fatalf("answer %q, want 200", status)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("idle connection: read = %v, want the server to close it", err)
	}
}

func TestNewSetsEveryBound(t *testing.T) {
	s := New(http.NotFoundHandler(), nil)
	if s.ReadHeaderTimeout != ReadHeaderTimeout || s.IdleTimeout != IdleTimeout || s.MaxHeaderBytes != MaxHeaderBytes {
		t.Fatalf("server bounds: header %s, idle %s, header bytes %d", s.ReadHeaderTimeout, s.IdleTimeout, s.MaxHeaderBytes)
	}
	if IdleTimeout <= 0 || ReadHeaderTimeout <= 0 {
		t.Fatal("a zero timeout means none")
	}
}

// TestAClientThatReadsNothingIsCut: a client that asks and then reads
// nothing of a large answer blocks the handler's writes once the socket
// buffers are full; the write fails after the stall bound (shortened
// here) instead of holding the connection and the handler forever.
func TestAClientThatReadsNothingIsCut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	srv := New(nil, nil)
	srv.Handler = boundWrites(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for range 1024 { // 64 MiB, more than any socket buffers hold
			if _, err := w.Write(chunk); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}), 200*time.Millisecond)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	var werr error
	testwait.For(t, 30*time.Second, "the handler's write to a client reading nothing to fail", func() bool {
		select {
		case werr = <-wrote:
			return true
		default:
			return false
		}
	})
	if werr == nil {
		t.Fatal("64 MiB were written to a client that read nothing")
	}
}

// TestWritesAfterASlowAnswerAreNotCut: the bound of one answer's writes
// does not outlive it: the next request on the connection, slower than
// the bound to start writing, is answered, and a handler may take longer
// than the bound between two writes.
func TestWritesAfterASlowAnswerAreNotCut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(nil, nil)
	srv.Handler = boundWrites(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(300 * time.Millisecond) // longer than the bound, between writes
		}
		fmt.Fprint(w, "ok")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("flushing the answer to %s: %v", r.URL.Path, err)
		}
	}), 100*time.Millisecond)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()
	status, c, br := exchange(t, addr, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
	if !strings.HasPrefix(status, "200") {
		t.Fatalf("first answer %q, want 200", status)
	}
	if _, err := c.Write([]byte("GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the second answer on the connection: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("second answer %s, want 200", resp.Status)
	}
}
