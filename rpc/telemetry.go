package rpc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
)

// TelemetryConfig sends the spans of every call a Server handles or a
// connection makes to an OpenTelemetry collector over OTLP (Jaeger, Tempo
// and the OpenTelemetry Collector all accept it), like go-zero's
// Telemetry section. It is off while Endpoint is empty.
type TelemetryConfig struct {
	// Name is the service.name the spans carry; empty means the server's
	// Name, or for a client the program's file name.
	Name string `yaml:"Name"`
	// Endpoint is the collector's host:port (4317 for OTLP gRPC, 4318 for
	// OTLP HTTP).
	Endpoint string `yaml:"Endpoint"`
	// Protocol is otlpgrpc (default) or otlphttp.
	Protocol string `yaml:"Protocol"`
	// Path is the URL path of otlphttp (default /v1/traces).
	Path string `yaml:"Path"`
	// Sampler is the fraction of the traces started here that are
	// recorded, from 0 to 1; 0 (unset) means 1, every trace. A call whose
	// caller recorded its trace is always recorded, so a trace is whole.
	Sampler float64 `yaml:"Sampler"`
	// Batcher sizes the queue of finished spans and how often it is sent.
	Batcher BatcherConfig `yaml:"Batcher"`
	// Insecure sends in plaintext. Otherwise the exporter uses TLS,
	// verifying the collector with CA (a PEM file) or the system's roots.
	Insecure bool   `yaml:"Insecure"`
	CA       string `yaml:"CA"`
	// HeadersFile and HeadersEnv name a file and an environment variable
	// holding headers sent with every export (API keys), as
	// key=value pairs separated by commas or lines, values URL-encoded
	// (the format of OTEL_EXPORTER_OTLP_HEADERS). Both may be set; the
	// variable wins on a key both hold.
	HeadersFile string `yaml:"HeadersFile"`
	HeadersEnv  string `yaml:"HeadersEnv"`
}

// BatcherConfig configures the batch span processor; zero fields take
// OpenTelemetry's defaults.
type BatcherConfig struct {
	// MaxQueueSize is how many finished spans wait to be sent (default
	// 2048); when full, new spans are dropped, calls are never held up.
	MaxQueueSize int `yaml:"MaxQueueSize"`
	// MaxBatchSize is the most spans per export (default 512).
	MaxBatchSize int `yaml:"MaxBatchSize"`
	// BatchTimeout is the longest a span waits before it is sent (default 5s).
	BatchTimeout time.Duration `yaml:"BatchTimeout"`
	// ExportTimeout bounds one export, and the final flush when the server
	// stops or the connection closes (default 10s).
	ExportTimeout time.Duration `yaml:"ExportTimeout"`
}

// The telemetry protocols.
const (
	ProtocolOTLPGRPC = "otlpgrpc"
	ProtocolOTLPHTTP = "otlphttp"
)

const defaultExportTimeout = 10 * time.Second

// Enabled reports whether spans are exported (Endpoint is set).
func (c TelemetryConfig) Enabled() bool { return c.Endpoint != "" }

// validate reports every invalid field; the errors name the field under
// section (Telemetry).
func (c TelemetryConfig) validate() error {
	if !c.Enabled() {
		return nil
	}
	var errs []error
	if host, port, err := net.SplitHostPort(c.Endpoint); err != nil || host == "" {
		errs = append(errs, fmt.Errorf("setting Telemetry.Endpoint: %q is not host:port (the collector's OTLP address, e.g. otel-collector:4317)", c.Endpoint))
	} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		errs = append(errs, fmt.Errorf("setting Telemetry.Endpoint: %q has no valid port", c.Endpoint))
	}
	switch c.Protocol {
	case "", ProtocolOTLPGRPC:
		if c.Path != "" {
			errs = append(errs, errors.New("setting Telemetry.Path: only for Protocol otlphttp"))
		}
	case ProtocolOTLPHTTP:
		if c.Path != "" && !strings.HasPrefix(c.Path, "/") {
			errs = append(errs, fmt.Errorf("setting Telemetry.Path: %q must start with /", c.Path))
		}
	default:
		errs = append(errs, fmt.Errorf("setting Telemetry.Protocol: %q is not %s or %s", c.Protocol, ProtocolOTLPGRPC, ProtocolOTLPHTTP))
	}
	if c.Sampler < 0 || c.Sampler > 1 {
		errs = append(errs, fmt.Errorf("setting Telemetry.Sampler: %v must be between 0 and 1 (the fraction of traces recorded)", c.Sampler))
	}
	b := c.Batcher
	if b.MaxQueueSize < 0 || b.MaxBatchSize < 0 || b.BatchTimeout < 0 || b.ExportTimeout < 0 {
		errs = append(errs, errors.New("settings Telemetry.Batcher.MaxQueueSize, MaxBatchSize, BatchTimeout, ExportTimeout: must not be negative"))
	}
	if b.MaxQueueSize > 0 && b.MaxBatchSize > b.MaxQueueSize {
		errs = append(errs, fmt.Errorf("setting Telemetry.Batcher.MaxBatchSize: %d exceeds MaxQueueSize %d", b.MaxBatchSize, b.MaxQueueSize))
	}
	if c.Insecure && c.CA != "" {
		errs = append(errs, errors.New("settings Telemetry.Insecure, Telemetry.CA: a CA is for TLS, Insecure turns TLS off; set one"))
	}
	if c.HeadersEnv != "" && strings.ContainsAny(c.HeadersEnv, "=$ ") {
		errs = append(errs, fmt.Errorf("setting Telemetry.HeadersEnv: %q must be the name of an environment variable", c.HeadersEnv))
	}
	return errors.Join(errs...)
}

func (c TelemetryConfig) exportTimeout() time.Duration {
	if c.Batcher.ExportTimeout > 0 {
		return c.Batcher.ExportTimeout
	}
	return defaultExportTimeout
}

// headers reads HeadersFile and HeadersEnv.
func (c TelemetryConfig) headers() (map[string]string, error) {
	h := map[string]string{}
	if c.HeadersFile != "" {
		b, err := os.ReadFile(c.HeadersFile)
		if err != nil {
			return nil, fmt.Errorf("setting Telemetry.HeadersFile: %w", err)
		}
		if err := parseHeaders(string(b), h); err != nil {
			return nil, fmt.Errorf("setting Telemetry.HeadersFile %s: %w", c.HeadersFile, err)
		}
	}
	if c.HeadersEnv != "" {
		v, ok := os.LookupEnv(c.HeadersEnv)
		if !ok {
			return nil, fmt.Errorf("setting Telemetry.HeadersEnv: $%s is not set", c.HeadersEnv)
		}
		if err := parseHeaders(v, h); err != nil {
			return nil, fmt.Errorf("setting Telemetry.HeadersEnv $%s: %w", c.HeadersEnv, err)
		}
	}
	return h, nil
}

// parseHeaders adds the key=value pairs of s (separated by commas or
// newlines; blank lines and lines starting with # skipped) to h. The
// errors never quote a value, which may be a secret.
func parseHeaders(s string, h map[string]string) error {
	for i, field := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' }) {
		field = strings.TrimSpace(field)
		if field == "" || strings.HasPrefix(field, "#") {
			continue
		}
		k, v, ok := strings.Cut(field, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return fmt.Errorf("header %d is not key=value", i+1)
		}
		val, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("header %s: value is not URL-encoded", k)
		}
		h[k] = val
	}
	return nil
}

// tlsConfig is the exporter's TLS: nil with Insecure.
func (c TelemetryConfig) tlsConfig() (*tls.Config, error) {
	if c.Insecure {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("setting Telemetry.CA: %w", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("setting Telemetry.CA: %s holds no PEM certificate", c.CA)
		}
	}
	return t, nil
}

// newExporter builds the OTLP exporter. It reads the CA and headers
// files; it does not connect (the first export does).
func (c TelemetryConfig) newExporter(ctx context.Context) (sdktrace.SpanExporter, error) {
	headers, err := c.headers()
	if err != nil {
		return nil, err
	}
	tlsCfg, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	if c.Protocol == ProtocolOTLPHTTP {
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(c.Endpoint), otlptracehttp.WithHeaders(headers), otlptracehttp.WithTimeout(c.exportTimeout())}
		if c.Path != "" {
			opts = append(opts, otlptracehttp.WithURLPath(c.Path))
		}
		if tlsCfg == nil {
			opts = append(opts, otlptracehttp.WithInsecure())
		} else {
			opts = append(opts, otlptracehttp.WithTLSClientConfig(tlsCfg))
		}
		return otlptracehttp.New(ctx, opts...)
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(c.Endpoint), otlptracegrpc.WithHeaders(headers), otlptracegrpc.WithTimeout(c.exportTimeout())}
	if tlsCfg == nil {
		opts = append(opts, otlptracegrpc.WithInsecure())
	} else {
		opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(tlsCfg)))
	}
	return otlptracegrpc.New(ctx, opts...)
}

// telemetry is the tracer provider a Server or a connection built from a
// TelemetryConfig, and owns: its exporter is set by open and flushed by
// shutdown.
type telemetry struct {
	cfg      TelemetryConfig
	provider *sdktrace.TracerProvider
	batcher  sdktrace.SpanProcessor // the provider's; its goroutine runs until shutdown
	exporter *loggedExporter
}

// newTelemetry builds the provider for cfg; defaultName is the service
// name when cfg has none. It does no I/O.
func newTelemetry(cfg TelemetryConfig, defaultName string, log *slog.Logger) *telemetry {
	name := cfg.Name
	if name == "" {
		name = defaultName
	}
	ratio := cfg.Sampler
	if ratio == 0 {
		ratio = 1
	}
	exp := &loggedExporter{log: log.With("endpoint", cfg.Endpoint), every: time.Minute}
	b := cfg.Batcher
	bopts := []sdktrace.BatchSpanProcessorOption{sdktrace.WithExportTimeout(cfg.exportTimeout())}
	if b.MaxQueueSize > 0 {
		bopts = append(bopts, sdktrace.WithMaxQueueSize(b.MaxQueueSize))
	}
	if b.MaxBatchSize > 0 {
		bopts = append(bopts, sdktrace.WithMaxExportBatchSize(b.MaxBatchSize))
	}
	if b.BatchTimeout > 0 {
		bopts = append(bopts, sdktrace.WithBatchTimeout(b.BatchTimeout))
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attribute.String("service.name", name)))
	if err != nil {
		res = resource.NewSchemaless(attribute.String("service.name", name))
	}
	batcher := sdktrace.NewBatchSpanProcessor(exp, bopts...)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSpanProcessor(batcher),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		sdktrace.WithResource(res),
	)
	return &telemetry{cfg: cfg, provider: tp, batcher: batcher, exporter: exp}
}

// open builds the exporter the provider sends through.
func (t *telemetry) open(ctx context.Context) error {
	exp, err := t.cfg.newExporter(ctx)
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	t.exporter.set(exp)
	return nil
}

// shutdown sends the spans still queued and stops the exporter, within
// ctx and the export timeout. The batcher's goroutine and the exporter's
// connection end even when ctx has ended: the provider then shuts nothing
// down (and counts itself shut down), so the batcher is shut down here
// too; a second shutdown does nothing.
func (t *telemetry) shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.exportTimeout())
	defer cancel()
	err := t.provider.Shutdown(ctx)
	if berr := t.batcher.Shutdown(ctx); err == nil {
		err = berr
	}
	if err != nil {
		return fmt.Errorf("telemetry: flush spans to %s: %w", t.cfg.Endpoint, err)
	}
	return nil
}

// loggedExporter sends through the exporter open set (dropping spans
// until then) and logs export errors instead of handing them to
// OpenTelemetry's process-wide error handler: the first at once, then at
// most one a period with the count of those not logged. A collector that
// is down costs log lines, never calls.
type loggedExporter struct {
	inner atomic.Pointer[sdktrace.SpanExporter]
	log   *slog.Logger
	every time.Duration

	mu         sync.Mutex
	lastLog    time.Time
	suppressed int
}

func (e *loggedExporter) set(exp sdktrace.SpanExporter) { e.inner.Store(&exp) }

func (e *loggedExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	inner := e.inner.Load()
	if inner == nil {
		return nil
	}
	if err := (*inner).ExportSpans(ctx, spans); err != nil {
		e.logError(err, len(spans))
	}
	return nil
}

func (e *loggedExporter) Shutdown(ctx context.Context) error {
	if inner := e.inner.Load(); inner != nil {
		return (*inner).Shutdown(ctx)
	}
	return nil
}

func (e *loggedExporter) logError(err error, spans int) {
	e.mu.Lock()
	now := time.Now()
	if !e.lastLog.IsZero() && now.Sub(e.lastLog) < e.every {
		e.suppressed++
		e.mu.Unlock()
		return
	}
	suppressed := e.suppressed
	e.lastLog, e.suppressed = now, 0
	e.mu.Unlock()
	e.log.Warn("telemetry: spans not exported", "err", err, "spans", spans, "errors_not_logged", suppressed, "next_log_after", e.every)
}

// WithTelemetry exports the spans of every call made through the
// connection as cfg says (nothing when cfg has no Endpoint). Closing the
// connection flushes the spans still queued, within the export timeout.
func WithTelemetry(cfg TelemetryConfig) DialOption {
	return func(o *dialOptions) {
		if cfg.Enabled() {
			o.telemetry = &cfg
		}
	}
}

// dialTelemetry builds the connection's tracer provider and returns the
// option that traces its calls.
func (o *dialOptions) dialTelemetry(ctx context.Context, log *slog.Logger) (*telemetry, grpc.DialOption, error) {
	if err := o.telemetry.validate(); err != nil {
		return nil, nil, err
	}
	t := newTelemetry(*o.telemetry, filepath.Base(os.Args[0]), log)
	if err := t.open(ctx); err != nil {
		t.shutdown(ctx)
		return nil, nil, err
	}
	return t, grpc.WithStatsHandler(newClientStatsHandler(t.provider)), nil
}

// flushOnClose flushes t once conn is closed. Its goroutine ends then.
func (t *telemetry) flushOnClose(conn *grpc.ClientConn, log *slog.Logger) {
	go func() {
		for s := conn.GetState(); s != connectivity.Shutdown; s = conn.GetState() {
			conn.WaitForStateChange(context.Background(), s)
		}
		if err := t.shutdown(context.Background()); err != nil {
			log.Warn("telemetry: spans lost at close", "err", err)
		}
	}()
}
