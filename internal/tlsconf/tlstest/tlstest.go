// Package tlstest serves TLS on loopback for tests: a mutual-TLS front on
// a plaintext server (fakes and agents that serve plaintext), or any
// handler behind a TLS listener.
package tlstest

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
)

// Serve listens on 127.0.0.1 with cfg and runs handle on every connection
// whose handshake succeeded. Each handshake's result is sent to
// handshakes when it is not nil (dropped when it is full). It returns the
// address; the listener and every connection end, and Serve waits for its
// goroutines, when the test ends.
func Serve(t testing.TB, cfg *tls.Config, handshakes chan<- error, handle func(c *tls.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			c := tls.Server(raw, cfg)
			if !s.track(c) {
				continue
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				err := c.Handshake()
				if handshakes != nil {
					select {
					case handshakes <- err:
					default:
					}
				}
				if err == nil {
					handle(c)
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.closeAll()
		s.wg.Wait()
	})
	return ln.Addr().String()
}

// server tracks the connections of one Serve, to end them with the test.
type server struct {
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
	done  bool
}

// track registers c, or closes it and returns false once the test ended.
func (s *server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		c.Close()
		return false
	}
	s.conns[c] = true
	return true
}

func (s *server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	for c := range s.conns {
		c.Close()
	}
}

// Front serves cfg (a tlsconf server config, offered with ALPN h2 as a
// gRPC server does) and relays every connection that completes its
// handshake to target, a plaintext gRPC server. Handshake results go to
// handshakes as with Serve.
func Front(t testing.TB, target string, cfg *tls.Config, handshakes chan<- error) string {
	t.Helper()
	return Serve(t, withH2(cfg), handshakes, func(c *tls.Conn) {
		back, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer back.Close()
		relay(c, back)
	})
}

// relay copies both ways until either side ends, then ends both.
func relay(a, b net.Conn) {
	var once sync.Once
	stop := func() { once.Do(func() { a.Close(); b.Close() }) }
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer stop()
		io.Copy(a, b)
	}()
	go func() {
		defer wg.Done()
		defer stop()
		io.Copy(b, a)
	}()
	wg.Wait()
}

// withH2 returns cfg offering ALPN h2, also in the configs its
// GetConfigForClient returns.
func withH2(cfg *tls.Config) *tls.Config {
	cfg = cfg.Clone()
	cfg.NextProtos = append(cfg.NextProtos, "h2")
	if get := cfg.GetConfigForClient; get != nil {
		cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := get(hello)
			if c == nil {
				return c, err
			}
			c = c.Clone()
			c.NextProtos = append(c.NextProtos, "h2")
			return c, err
		}
	}
	return cfg
}
