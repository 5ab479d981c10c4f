package gen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/rpc"
)

// TestGeneratedServiceShowsObservabilitySections: etc/<name>.yaml shows
// the Telemetry, Prometheus and Log sections commented out with their
// defaults, and uncommented they load into rpc.ServerConfig and pass its
// validation.
func TestGeneratedServiceShowsObservabilitySections(t *testing.T) {
	plan := generate(t, "testdata/run/echo.proto", filepath.Join(t.TempDir(), "echo"))
	var etc string
	for _, f := range plan.Files {
		if f.Path == "etc/echo.yaml" {
			etc = string(f.Content)
		}
	}
	for _, section := range []string{"\n# Telemetry:\n", "\n# Prometheus:\n", "\n# Log:\n"} {
		if !strings.Contains(etc, section) {
			t.Errorf("etc/echo.yaml does not show %q commented out:\n%s", strings.TrimSpace(section), etc)
		}
	}
	path := filepath.Join(t.TempDir(), "echo.yaml")
	if err := os.WriteFile(path, []byte(uncommentKeys(etc)), 0o600); err != nil {
		t.Fatal(err)
	}
	var cfg rpc.ServerConfig
	if err := rpc.LoadConfig(path, &cfg); err != nil {
		t.Fatalf("load etc/echo.yaml with its keys uncommented: %v", err)
	}
	wantTel := rpc.TelemetryConfig{Name: "echo.rpc", Endpoint: "127.0.0.1:4317", Protocol: rpc.ProtocolOTLPGRPC, Sampler: 1, Insecure: true,
		Batcher: rpc.BatcherConfig{MaxQueueSize: 2048, MaxBatchSize: 512, BatchTimeout: 5 * time.Second, ExportTimeout: 10 * time.Second}}
	if cfg.Telemetry != wantTel {
		t.Errorf("Telemetry %+v, want %+v", cfg.Telemetry, wantTel)
	}
	if want := (rpc.PrometheusConfig{Host: "127.0.0.1", Port: 9101, Path: "/metrics"}); cfg.Prometheus != want {
		t.Errorf("Prometheus %+v, want %+v", cfg.Prometheus, want)
	}
	if want := (rpc.LogConfig{Level: "info", Format: "text", Output: "stderr"}); cfg.Log != want {
		t.Errorf("Log %+v, want %+v", cfg.Log, want)
	}
	cfg.TLS = rpc.TLSConfig{}
	if err := cfg.Validate(); err != nil {
		t.Errorf("the sections as shown do not validate: %v", err)
	}
}
