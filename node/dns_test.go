package node

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
)

// TestDNSDefaultsAndBind: DNS is on by default, on port 8600 of loopback,
// for zrpc. with TTL 0; it listens on dns_bind whatever the agent's bind
// address, and dns_port 0 turns it off.
func TestDNSDefaultsAndBind(t *testing.T) {
	d := Default()
	if d.DNSPort != 8600 || d.DNSBind != "127.0.0.1" || d.DNSDomain != "zrpc." || d.DNSTTL != 0 {
		t.Fatalf("DNS defaults: port %d bind %q domain %q ttl %s; want 8600 127.0.0.1 zrpc. 0s", d.DNSPort, d.DNSBind, d.DNSDomain, d.DNSTTL)
	}
	if n := startNode(t, testConfig(t)); n.DNSAddr() != "" {
		t.Fatalf("dns_port 0: DNS answers on %s, want off", n.DNSAddr())
	}
	// A port already taken over UDP: Start fails naming DNS and the address.
	pc, err := net.ListenPacket("udp", "127.0.0.3:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cfg := testConfig(t)
	cfg.DNSBind, cfg.DNSPort = "127.0.0.3", pc.LocalAddr().(*net.UDPAddr).Port
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	n.Close()
	if want := net.JoinHostPort("127.0.0.3", strconv.Itoa(cfg.DNSPort)); err == nil || !strings.Contains(err.Error(), "DNS") || !strings.Contains(err.Error(), want) {
		t.Fatalf("Start with the DNS port taken: %v, want an error naming DNS and %s", err, want)
	}
	pc.Close()
	// Now free: the agent serves DNS there.
	cfg = testConfig(t)
	cfg.BindAddr = "127.0.0.2"
	cfg.DNSBind, cfg.DNSPort = "127.0.0.3", pc.LocalAddr().(*net.UDPAddr).Port
	n = startNode(t, cfg)
	if want := net.JoinHostPort("127.0.0.3", strconv.Itoa(cfg.DNSPort)); n.DNSAddr() != want {
		t.Fatalf("DNS answers on %q, want dns_bind:dns_port %s", n.DNSAddr(), want)
	}
}
