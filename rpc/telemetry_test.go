package rpc_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/rpc"
)

// relayConfig is the configuration of a service that calls another, kept
// as a generated service keeps it in internal/config.
type relayConfig struct {
	rpc.ServerConfig `yaml:",inline"`
	Next             rpc.ClientConfig `yaml:"Next"`
}

// loadYAML writes text to a file and loads it with rpc.LoadConfig.
func loadYAML(t *testing.T, text string, v any) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "etc.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := rpc.LoadConfig(path, v); err != nil {
		t.Fatal(err)
	}
}

// telemetryYAML is a Telemetry section (indented by indent) that sends to
// endpoint and holds spans until the server stops or the connection closes.
func telemetryYAML(indent, name, endpoint string) string {
	return strings.ReplaceAll(fmt.Sprintf(`Telemetry:
  Name: %s
  Endpoint: %s
  Insecure: true
  Batcher:
    BatchTimeout: 1h
`, name, endpoint), "\n", "\n"+indent)
}

// scrape reads the metrics served at addr (host:port) under /metrics, in
// Prometheus' text format.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s %v", addr, resp.Status, err)
	}
	return string(body)
}

// sample is the value of series (name{labels} as the text format writes
// it, labels sorted) in a scrape, 0 if absent.
func sample(scraped, series string) float64 {
	for line := range strings.Lines(scraped) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// A caller → service A → service B call, with telemetry, metrics and the
// hop's client set up by configuration alone: the collector gets the four
// spans of one trace, each the child of the one before, and A's
// Prometheus section serves its server and client request counters.
func TestConfiguredTelemetryTracesTwoHopsAndServesMetrics(t *testing.T) {
	recv := startOTLPReceiver(t)
	ctx := context.Background()

	var bCfg rpc.ServerConfig
	loadYAML(t, "Name: b.rpc\nListenOn: 127.0.0.1:0\nNoRegister: true\n"+telemetryYAML("", "b.rpc", recv.Addr), &bCfg)
	// B's own registry keeps its counters apart from A's in this process.
	b, err := rpc.NewServer(bCfg, rpc.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	grpctest.RegisterEcho(b.GRPC(), nil)
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(ctx) })

	var aCfg relayConfig
	loadYAML(t, "Name: a.rpc\nListenOn: 127.0.0.1:0\nNoRegister: true\n"+telemetryYAML("", "a.rpc", recv.Addr)+
		"Prometheus:\n  Host: 127.0.0.1\n"+
		"Next:\n  Target: direct:///"+b.Addr()+"\n  Metrics: true\n  "+telemetryYAML("  ", "a.rpc", recv.Addr), &aCfg)
	a, err := rpc.NewServer(aCfg.ServerConfig)
	if err != nil {
		t.Fatal(err)
	}
	toB, err := rpc.DialConfig(ctx, aCfg.Next)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { toB.Close() })
	relay(a.GRPC(), toB, nil)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Stop(ctx) })

	var cCfg rpc.ClientConfig
	loadYAML(t, "Target: direct:///"+a.Addr()+"\n"+telemetryYAML("", "caller", recv.Addr), &cCfg)
	toA, err := rpc.DialConfig(ctx, cCfg)
	if err != nil {
		t.Fatal(err)
	}

	before := scrape(t, a.MetricsAddr())
	if err := call(ctx, toA); err != nil {
		t.Fatal(err)
	}
	after := scrape(t, a.MetricsAddr())
	for _, family := range []string{"zrpc_server_requests_total", "zrpc_client_requests_total"} {
		series := fmt.Sprintf(`%s{code="OK",method=%q}`, family, grpctest.EchoMethod)
		if d := sample(after, series) - sample(before, series); d != 1 {
			t.Errorf("A's /metrics: %s grew by %v over one call, want 1:\n%s", series, d, after)
		}
	}

	// The batchers hold every span (BatchTimeout 1h) until closing and
	// stopping flush them.
	toA.Close()
	metricsAddr := a.MetricsAddr()
	a.Stop(ctx)
	toB.Close()
	b.Stop(ctx)
	if _, err := http.Get("http://" + metricsAddr + "/metrics"); err == nil {
		t.Error("A still serves metrics after Stop")
	}
	testwait.ForExplained(t, 20*time.Second, "the collector to get four spans", func() bool { return len(recv.Spans()) >= 4 }, recv.explain)

	spans := recv.Spans()
	find := func(service string, kind tracepb.Span_SpanKind) receivedSpan {
		t.Helper()
		for _, s := range spans {
			if s.service == service && s.kind == kind {
				return s
			}
		}
		t.Fatalf("no %s span of %s; %s", kind, service, recv.explain())
		return receivedSpan{}
	}
	chain := []receivedSpan{
		find("caller", tracepb.Span_SPAN_KIND_CLIENT),
		find("a.rpc", tracepb.Span_SPAN_KIND_SERVER),
		find("a.rpc", tracepb.Span_SPAN_KIND_CLIENT),
		find("b.rpc", tracepb.Span_SPAN_KIND_SERVER),
	}
	if len(spans) != len(chain) {
		t.Errorf("got %d spans, want %d; %s", len(spans), len(chain), recv.explain())
	}
	if chain[0].parent != "" {
		t.Errorf("the caller's span has a parent: %v", chain[0])
	}
	for i, s := range chain[1:] {
		if s.trace != chain[0].trace {
			t.Errorf("span %v is not in the caller's trace %s", s, chain[0].trace)
		}
		if s.parent != chain[i].id {
			t.Errorf("span %v: parent %s, want the span before it, %v", s, s.parent, chain[i])
		}
	}
}

// A server whose collector cannot be reached serves its calls as usual and
// logs that its spans were not exported.
func TestTelemetryWithAnUnreachableCollectorStillServes(t *testing.T) {
	ctx := context.Background()
	var logs testlog.Buffer
	var cfg rpc.ServerConfig
	// Port 1 on loopback: nothing listens, connections are refused.
	loadYAML(t, `Name: a.rpc
ListenOn: 127.0.0.1:0
NoRegister: true
Telemetry:
  Endpoint: 127.0.0.1:1
  Insecure: true
  Batcher:
    BatchTimeout: 20ms
    ExportTimeout: 500ms
`, &cfg)
	log := slog.New(slog.NewTextHandler(&logs, nil))
	srv, err := rpc.NewServer(cfg, rpc.WithServerLogger(log), rpc.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	grpctest.RegisterEcho(srv.GRPC(), nil)
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(ctx) })
	conn, err := rpc.Dial(ctx, "direct:///"+srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i := range 20 {
		if err := call(ctx, conn); err != nil {
			t.Fatalf("call %d with the collector down: %v", i, err)
		}
	}
	testwait.ForExplained(t, 20*time.Second, "the export error to be logged", func() bool {
		return strings.Contains(logs.String(), "spans not exported")
	}, logs.String)
}
