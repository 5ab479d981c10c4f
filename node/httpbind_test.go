package node

import (
	"net"
	"strings"
	"testing"
)

// TestHTTPBindsToItsOwnAddress: the HTTP endpoint (metrics, pprof) listens
// on http_bind, loopback by default, not on the agent's bind address.
func TestHTTPBindsToItsOwnAddress(t *testing.T) {
	if got := Default().HTTPBind; got != "127.0.0.1" {
		t.Fatalf("default http_bind = %q, want 127.0.0.1", got)
	}
	cfg := testConfig(t)
	cfg.BindAddr = "127.0.0.2"
	cfg.HTTPBind = "127.0.0.3"
	n := startNode(t, cfg)
	host, _, err := net.SplitHostPort(n.HTTPAddr())
	if err != nil || host != "127.0.0.3" {
		t.Fatalf("HTTP listens on %q, want http_bind 127.0.0.3", n.HTTPAddr())
	}
	if host, _, _ := net.SplitHostPort(n.GRPCAddr()); host != "127.0.0.2" {
		t.Fatalf("gRPC listens on %q, want bind 127.0.0.2", n.GRPCAddr())
	}
}

func TestHTTPBindMustBeAnIP(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTPBind = "localhost"
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "http_bind") {
		t.Fatalf("Validate with http_bind localhost = %v, want an error naming http_bind", err)
	}
}
