package rpc_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/rpc"
)

// Every bad value of the Telemetry, Prometheus and Log sections is
// refused by Validate with an error naming its setting.
func TestObservabilitySectionsRejectBadValuesByName(t *testing.T) {
	tel := func(f func(*rpc.TelemetryConfig)) func(*rpc.ServerConfig) {
		return func(c *rpc.ServerConfig) {
			c.Telemetry = rpc.TelemetryConfig{Endpoint: "127.0.0.1:4317", Insecure: true}
			f(&c.Telemetry)
		}
	}
	for _, tc := range []struct {
		name, want string
		set        func(*rpc.ServerConfig)
	}{
		{"endpoint without port", "Telemetry.Endpoint", tel(func(c *rpc.TelemetryConfig) { c.Endpoint = "collector" })},
		{"endpoint as URL", "Telemetry.Endpoint", tel(func(c *rpc.TelemetryConfig) { c.Endpoint = "http://collector:4318/v1/traces" })},
		{"endpoint port 0", "Telemetry.Endpoint", tel(func(c *rpc.TelemetryConfig) { c.Endpoint = "collector:0" })},
		{"unknown protocol", "Telemetry.Protocol", tel(func(c *rpc.TelemetryConfig) { c.Protocol = "zipkin" })},
		{"path with grpc", "Telemetry.Path", tel(func(c *rpc.TelemetryConfig) { c.Path = "/v1/traces" })},
		{"relative http path", "Telemetry.Path", tel(func(c *rpc.TelemetryConfig) { c.Protocol, c.Path = rpc.ProtocolOTLPHTTP, "v1/traces" })},
		{"sampler above 1", "Telemetry.Sampler", tel(func(c *rpc.TelemetryConfig) { c.Sampler = 1.5 })},
		{"negative sampler", "Telemetry.Sampler", tel(func(c *rpc.TelemetryConfig) { c.Sampler = -0.1 })},
		{"negative batch timeout", "Telemetry.Batcher", tel(func(c *rpc.TelemetryConfig) { c.Batcher.BatchTimeout = -time.Second })},
		{"batch above queue", "Telemetry.Batcher.MaxBatchSize", tel(func(c *rpc.TelemetryConfig) { c.Batcher.MaxQueueSize, c.Batcher.MaxBatchSize = 10, 20 })},
		{"CA with Insecure", "Telemetry.Insecure, Telemetry.CA", tel(func(c *rpc.TelemetryConfig) { c.CA = "ca.pem" })},
		{"headers env not a name", "Telemetry.HeadersEnv", tel(func(c *rpc.TelemetryConfig) { c.HeadersEnv = "key=secret" })},
		{"prometheus port out of range", "Prometheus.Port", func(c *rpc.ServerConfig) { c.Prometheus = rpc.PrometheusConfig{Host: "127.0.0.1", Port: 70000} }},
		{"prometheus host with port", "Prometheus.Host", func(c *rpc.ServerConfig) { c.Prometheus = rpc.PrometheusConfig{Host: "127.0.0.1:9101"} }},
		{"prometheus port without host", "Prometheus.Host", func(c *rpc.ServerConfig) { c.Prometheus = rpc.PrometheusConfig{Port: 9101} }},
		{"prometheus relative path", "Prometheus.Path", func(c *rpc.ServerConfig) { c.Prometheus = rpc.PrometheusConfig{Host: "127.0.0.1", Path: "metrics"} }},
		{"unknown log level", "Log.Level", func(c *rpc.ServerConfig) { c.Log.Level = "loud" }},
		{"unknown log format", "Log.Format", func(c *rpc.ServerConfig) { c.Log.Format = "xml" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := rpc.ServerConfig{Name: "a.rpc", ListenOn: "127.0.0.1:0"}
			tc.set(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), "setting "+tc.want) && !strings.Contains(err.Error(), "settings "+tc.want) {
				t.Errorf("Validate() = %v, want an error naming %s", err, tc.want)
			}
			if _, err := rpc.NewServer(cfg); err == nil {
				t.Error("NewServer accepted it")
			}
		})
	}
	bad := rpc.ClientConfig{Target: "direct:///127.0.0.1:1", Telemetry: rpc.TelemetryConfig{Endpoint: "127.0.0.1:4317", Sampler: 2}}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "setting Telemetry.Sampler") {
		t.Errorf("ClientConfig.Validate() = %v, want an error naming Telemetry.Sampler", err)
	}
	if _, err := rpc.DialConfig(context.Background(), bad); err == nil {
		t.Error("DialConfig accepted a bad Telemetry section")
	}
}

// A client's telemetry over OTLP gRPC or HTTP sends the headers of its
// HeadersFile and HeadersEnv, and closing the connection flushes the spans
// its batcher still holds.
func TestClientTelemetrySendsHeadersAndFlushesOnClose(t *testing.T) {
	target := "direct:///" + grpctest.Serve(t, func(s *grpc.Server) { grpctest.RegisterEcho(s, nil) })
	recv := startOTLPReceiver(t, "x-api-key", "x-tenant")
	file := filepath.Join(t.TempDir(), "otlp-headers")
	if err := os.WriteFile(file, []byte("# collector credentials\nx-api-key=s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ZRPC_TEST_OTLP_HEADERS", "x-tenant=team%20a")
	for _, tc := range []struct{ protocol, endpoint string }{
		{rpc.ProtocolOTLPGRPC, recv.Addr},
		{rpc.ProtocolOTLPHTTP, recv.HTTPAddr},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			ctx := context.Background()
			before := len(recv.Spans())
			conn, err := rpc.DialConfig(ctx, rpc.ClientConfig{Target: target, Telemetry: rpc.TelemetryConfig{
				Name: "caller", Endpoint: tc.endpoint, Protocol: tc.protocol, Insecure: true,
				HeadersFile: file, HeadersEnv: "ZRPC_TEST_OTLP_HEADERS",
				Batcher: rpc.BatcherConfig{BatchTimeout: time.Hour},
			}})
			if err != nil {
				t.Fatal(err)
			}
			if err := call(ctx, conn); err != nil {
				t.Fatal(err)
			}
			conn.Close()
			testwait.ForExplained(t, 20*time.Second, "the span flushed at close", func() bool { return len(recv.Spans()) > before }, recv.explain)
			h := recv.Headers()
			if got := h[len(h)-1]; got["x-api-key"] != "s3cret" || got["x-tenant"] != "team a" {
				t.Errorf("export headers %v, want x-api-key from the file and x-tenant from the variable", got)
			}
		})
	}
}

// A headers file that cannot be read fails Start (for a server) or Dial,
// naming the setting; the error does not quote the headers.
func TestTelemetryHeadersThatCannotBeReadFailByName(t *testing.T) {
	ctx := context.Background()
	tel := rpc.TelemetryConfig{Endpoint: "127.0.0.1:4317", Insecure: true, HeadersFile: filepath.Join(t.TempDir(), "missing")}
	srv, err := rpc.NewServer(rpc.ServerConfig{Name: "a.rpc", ListenOn: "127.0.0.1:0", NoRegister: true, Telemetry: tel}, rpc.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err == nil || !strings.Contains(err.Error(), "Telemetry.HeadersFile") {
		t.Errorf("Start() = %v, want an error naming Telemetry.HeadersFile", err)
	}
	srv.Stop(ctx)

	file := filepath.Join(t.TempDir(), "headers")
	os.WriteFile(file, []byte("x-api-key: s3cret\n"), 0o600)
	tel.HeadersFile = file
	_, err = rpc.DialConfig(ctx, rpc.ClientConfig{Target: "direct:///127.0.0.1:1", Telemetry: tel})
	if err == nil || !strings.Contains(err.Error(), "Telemetry.HeadersFile") || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("DialConfig() = %v, want an error naming Telemetry.HeadersFile without its secret", err)
	}
}

// The Log section builds the server's logger: its level, format and file.
// A logger passed with WithServerLogger wins over the section.
func TestLogSectionBuildsTheServerLogger(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.log")
	cfg := rpc.ServerConfig{Name: "a.rpc", ListenOn: "127.0.0.1:0", NoRegister: true, Log: rpc.LogConfig{Level: "warn", Format: "json", Output: path}}
	srv, err := rpc.NewServer(cfg, rpc.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	srv.Logger().Info("below the level")
	srv.Logger().Warn("at the level", "k", "v")
	srv.Stop(context.Background())
	out, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var rec map[string]any
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &rec) != nil || rec["msg"] != "at the level" || rec["k"] != "v" {
		t.Fatalf("log file holds %q, want one JSON record of the warning", out)
	}

	cfg.Log.Output = filepath.Join(t.TempDir(), "unused.log")
	srv, err = rpc.NewServer(cfg, rpc.WithServerLogger(slog.New(slog.DiscardHandler)), rpc.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	srv.Logger().Warn("discarded")
	srv.Stop(context.Background())
	if _, err := os.Stat(cfg.Log.Output); !os.IsNotExist(err) {
		t.Errorf("the Log section opened %s though WithServerLogger passed a logger (stat: %v)", cfg.Log.Output, err)
	}
}

// Options that contradict the sections are refused: tracing passed in code
// on top of a Telemetry section, and a Prometheus section whose registry
// cannot be gathered.
func TestObservabilitySectionsRefuseContradictingOptions(t *testing.T) {
	cfg := rpc.ServerConfig{Name: "a.rpc", ListenOn: "127.0.0.1:0", Telemetry: rpc.TelemetryConfig{Endpoint: "127.0.0.1:4317", Insecure: true}}
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	if _, err := rpc.NewServer(cfg, rpc.WithServerTracing(tp)); err == nil || !strings.Contains(err.Error(), "Telemetry") {
		t.Errorf("NewServer(Telemetry, WithServerTracing) = %v, want an error naming Telemetry", err)
	}
	cfg = rpc.ServerConfig{Name: "a.rpc", ListenOn: "127.0.0.1:0", Prometheus: rpc.PrometheusConfig{Host: "127.0.0.1"}}
	wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"x": "y"}, prometheus.NewRegistry())
	if _, err := rpc.NewServer(cfg, rpc.WithRegisterer(wrapped)); err == nil || !strings.Contains(err.Error(), "Prometheus") {
		t.Errorf("NewServer(Prometheus, a registerer that cannot gather) = %v, want an error naming Prometheus", err)
	}
}
