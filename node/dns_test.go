package node

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/internal/testlog"
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

// testDNSToken has the form of an ACL token secret.
const testDNSToken = "zrpc_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

// TestDNSTokenFromAFile: dns_token_file gives the DNS token, trimmed; a
// file that is missing or holds no token secret stops the agent at Start,
// naming the setting and never showing what the file holds.
func TestDNSTokenFromAFile(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "dns.token"), filepath.Join(dir, "bad.token")
	os.WriteFile(good, []byte(testDNSToken+"\n"), 0o600)
	os.WriteFile(bad, []byte("hunter2\n"), 0o600)
	c := Config{DNSTokenFile: good}
	if got, err := c.dnsToken(); err != nil || got != testDNSToken {
		t.Fatalf("dns_token_file %s: %q, %v; want the token", good, got, err)
	}
	for _, path := range []string{bad, filepath.Join(dir, "missing.token")} {
		cfg := testConfig(t)
		cfg.ACL, cfg.DNSPort, cfg.DNSTokenFile = true, 0, path
		if _, err := cfg.dnsToken(); err == nil || !strings.Contains(err.Error(), "dns_token_file") || strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("dns_token_file %s: %v, want an error naming dns_token_file and not the file's text", path, err)
		}
	}
	// Start reads it only when DNS is on; then a bad one stops the agent.
	cfg := testConfig(t)
	cfg.DNSTokenFile = bad
	cfg.DNSBind, cfg.DNSPort = "127.0.0.3", freeUDPPort(t, "127.0.0.3")
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	n.Close()
	if err == nil || !strings.Contains(err.Error(), "dns_token_file") {
		t.Fatalf("Start with a bad dns_token_file: %v, want an error naming it", err)
	}
}

// freeUDPPort returns a UDP port free on ip now.
func freeUDPPort(t *testing.T, ip string) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// TestDNSWithACLsSaysWhyItAnswersNothing: with ACLs on, DNS without a
// usable dns_token answers NXDOMAIN for every service; the agent's log
// says why, once: at start when no token is set, and when a question
// meets a token the ACLs do not have (once a minute, whatever the
// number of questions).
func TestDNSWithACLsSaysWhyItAnswersNothing(t *testing.T) {
	for _, tc := range []struct {
		what, token, want string
	}{
		{"no dns_token", "", "no dns_token is set"},
		{"a dns_token the ACLs do not have", testDNSToken, "token not found"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			var logs testlog.Buffer
			cfg := testConfig(t)
			cfg.ACL, cfg.DNSToken = true, tc.token
			cfg.DNSBind, cfg.DNSPort = "127.0.0.3", freeUDPPort(t, "127.0.0.3")
			n := startNode(t, cfg, WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
			canRead := n.dnsCanRead(tc.token)
			for range 3 {
				if canRead("user.rpc") {
					t.Fatal("DNS may read user.rpc without a token the ACLs have")
				}
			}
			if got := logs.String(); !strings.Contains(got, tc.want) || strings.Count(got, "DNS answers NXDOMAIN for every service") != 1 {
				t.Fatalf("agent's warnings:\n%s\nwant one saying DNS answers NXDOMAIN for every service, with %q", got, tc.want)
			}
		})
	}
}
