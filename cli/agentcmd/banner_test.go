package agentcmd

import (
	"bytes"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/node"
)

type fakeListeners struct{ grpc, http, dns string }

func (f fakeListeners) GRPCAddr() string { return f.grpc }
func (f fakeListeners) HTTPAddr() string { return f.http }
func (f fakeListeners) DNSAddr() string  { return f.dns }

// TestBannerNamesEveryEndpoint: the lines an agent prints at start point at
// what a new user reaches for (the API with its zrpcctl flag, the web UI,
// metrics, DNS with a query to try) and leave out what is off.
func TestBannerNamesEveryEndpoint(t *testing.T) {
	cfg := node.Default()
	cfg.Name, cfg.DataDir = "n1", "/var/lib/zrpc"
	var out bytes.Buffer
	printBanner(&out, cfg, fakeListeners{grpc: "127.0.0.1:8400", http: "127.0.0.1:8480", dns: "[::1]:8600"})
	for _, want := range []string{
		`agent "n1" running`,
		"gRPC API:  127.0.0.1:8400   (zrpcctl --addr 127.0.0.1:8400)",
		"web UI:    http://127.0.0.1:8480/ui/",
		"metrics:   http://127.0.0.1:8480/metrics",
		"DNS:       [::1]:8600   (dig @::1 -p 8600 SERVICE.service.zrpc.)",
		"data dir:  /var/lib/zrpc",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, out.String())
		}
	}

	out.Reset()
	printBanner(&out, cfg, fakeListeners{grpc: "127.0.0.1:8400", http: "127.0.0.1:8480"})
	if strings.Contains(out.String(), "DNS") {
		t.Errorf("banner with DNS off mentions it:\n%s", out.String())
	}
}
