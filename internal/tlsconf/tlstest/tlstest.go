// Package tlstest puts a mutual-TLS front on a plaintext loopback server,
// so tests can talk TLS to fakes and agents that serve plaintext.
package tlstest

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
)

// Front listens on 127.0.0.1 with cfg (a tlsconf server config, offering
// ALPN h2 as a gRPC server does), and relays every connection that
// completes its handshake to target, a gRPC server, in plaintext. It
// returns the TLS address; the listener and every relay stop when the test
// ends. Handshake errors are sent to errs when it is not nil (dropped when
// it is full).
func Front(t testing.TB, target string, cfg *tls.Config, errs chan<- error) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg = withH2(cfg)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
		done  bool
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if done {
			c.Close()
			return false
		}
		conns[c] = true
		return true
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			c := tls.Server(raw, cfg)
			if !track(c) {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if err := c.Handshake(); err != nil {
					if errs != nil {
						select {
						case errs <- err:
						default:
						}
					}
					return
				}
				back, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				if !track(back) {
					return
				}
				defer back.Close()
				relay(c, back)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		done = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// relay copies both ways until either side ends, then ends both.
func relay(a, b net.Conn) {
	var once sync.Once
	stop := func() { once.Do(func() { a.Close(); b.Close() }) }
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); defer stop(); io.Copy(a, b) }()
	go func() { defer wg.Done(); defer stop(); io.Copy(b, a) }()
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
