package rpc_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/rpc"
)

// A service's config embeds the rpc configs, as a generated etc/*.yaml does.
type serviceConfig struct {
	rpc.ServerConfig `yaml:",inline"`
	Orders           rpc.ClientConfig `yaml:"Orders"`
}

// TestLoadConfigOfAnEmptyFileSaysSo: a config file with nothing in it
// (empty, or comments only) is refused saying so, not with the parser's
// bare EOF.
func TestLoadConfigOfAnEmptyFileSaysSo(t *testing.T) {
	for name, text := range map[string]string{"empty": "", "comments only": "# Name: user.rpc\n\n"} {
		path := filepath.Join(t.TempDir(), "user.yaml")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := rpc.DefaultServerConfig()
		if err := rpc.LoadConfig(path, &cfg); err == nil || !strings.Contains(err.Error(), "holds no settings") {
			t.Errorf("%s file: %v, want an error saying it holds no settings", name, err)
		}
	}
}

func TestLoadConfigFromYAML(t *testing.T) {
	path := filepath.Join(t.TempDir(), "user.yaml")
	os.WriteFile(path, []byte(`Name: user.rpc
ListenOn: 0.0.0.0:9001
Zone: a
Weight: 50
DrainDelay: 2s
Orders:
  Target: zrpc:///order.rpc
  Timeout: 500ms
`), 0o600)
	cfg := serviceConfig{ServerConfig: rpc.DefaultServerConfig(), Orders: rpc.DefaultClientConfig()}
	if err := rpc.LoadConfig(path, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "user.rpc" || cfg.ListenOn != "0.0.0.0:9001" || cfg.Weight != 50 || cfg.DrainDelay != 2*time.Second ||
		cfg.StopTimeout != 10*time.Second || cfg.Orders.Target != "zrpc:///order.rpc" || cfg.Orders.Timeout != 500*time.Millisecond ||
		cfg.Orders.Balancer != "zrpc_p2c_ewma" {
		t.Fatalf("loaded %+v", cfg)
	}
	if err := cfg.ServerConfig.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Orders.Validate(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte("Nmae: typo\n"), 0o600)
	if err := rpc.LoadConfig(path, &cfg); err == nil || !strings.Contains(err.Error(), "Nmae") {
		t.Fatalf("unknown key: %v", err)
	}
	if err := (rpc.ClientConfig{Target: "http://x"}).Validate(); err == nil || !strings.Contains(err.Error(), "Target") {
		t.Fatalf("bad target: %v", err)
	}
}

func TestServerConfigCheckIntervalBounds(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		ok       bool
	}{{0, true}, {100 * time.Millisecond, true}, {time.Hour, true}, {-time.Second, false}, {time.Millisecond, false}, {2 * time.Hour, false}} {
		cfg := rpc.DefaultServerConfig()
		cfg.Name, cfg.ListenOn, cfg.CheckInterval = "user.rpc", "127.0.0.1:0", tc.interval
		err := cfg.Validate()
		if tc.ok != (err == nil) || err != nil && !strings.Contains(err.Error(), "setting CheckInterval") {
			t.Errorf("CheckInterval %v: Validate() = %v, want ok=%v (naming CheckInterval)", tc.interval, err, tc.ok)
		}
	}
}

// TestServerConfigAdvertiseIsAnAddressCallersDial: an Advertise without
// a host, without a usable port, or naming no host (0.0.0.0) is refused
// by name when the server is built, where the agent had refused the
// registration at Start, or callers had dialled an address that was none.
func TestServerConfigAdvertiseIsAnAddressCallersDial(t *testing.T) {
	for _, tc := range []struct {
		advertise string
		ok        bool
	}{
		{"", true}, {"10.0.0.5:9001", true}, {"user-1.svc:9001", true}, {"[fd00::5]:9001", true},
		{"10.0.0.5", false}, {":9001", false}, {"10.0.0.5:0", false}, {"10.0.0.5:http", false},
		{"10.0.0.5:70000", false}, {"0.0.0.0:9001", false}, {"[::]:9001", false},
	} {
		cfg := rpc.DefaultServerConfig()
		cfg.Name, cfg.ListenOn, cfg.Advertise = "user.rpc", "127.0.0.1:0", tc.advertise
		err := cfg.Validate()
		if tc.ok != (err == nil) || err != nil && !strings.Contains(err.Error(), "setting Advertise: \""+tc.advertise+"\"") {
			t.Errorf("Advertise %q: Validate() = %v, want ok=%v (naming Advertise and the value)", tc.advertise, err, tc.ok)
		}
	}
}
