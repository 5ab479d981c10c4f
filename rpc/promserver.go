package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/zrpcio/zrpc/internal/httpserve"
)

// PrometheusConfig makes a Server serve its metrics over HTTP for
// Prometheus to scrape, like go-zero's Prometheus section: the server
// chain's zrpc_server_* and, from the same registry, the zrpc_client_* of
// the connections the process dials with ClientConfig.Metrics. It is off
// while Host is empty.
type PrometheusConfig struct {
	// Host is the address to listen on: 127.0.0.1 for this machine only,
	// 0.0.0.0 (or the pod's address) for a remote Prometheus.
	Host string `yaml:"Host"`
	// Port is the port; 0 picks a free one (Server.MetricsAddr tells).
	Port int `yaml:"Port"`
	// Path is the URL path (default /metrics).
	Path string `yaml:"Path"`
}

// Enabled reports whether metrics are served (Host is set).
func (c PrometheusConfig) Enabled() bool { return c.Host != "" }

func (c PrometheusConfig) validate() error {
	if !c.Enabled() {
		if c.Port != 0 || c.Path != "" {
			return errors.New("setting Prometheus.Host: required with Prometheus.Port or Path (127.0.0.1, or 0.0.0.0 for a remote Prometheus)")
		}
		return nil
	}
	var errs []error
	if strings.ContainsAny(c.Host, ":/ ") && net.ParseIP(c.Host) == nil {
		errs = append(errs, fmt.Errorf("setting Prometheus.Host: %q is not a host name or IP address (the port goes in Prometheus.Port)", c.Host))
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("setting Prometheus.Port: %d is not a port (0 to 65535)", c.Port))
	}
	if c.Path != "" && !strings.HasPrefix(c.Path, "/") {
		errs = append(errs, fmt.Errorf("setting Prometheus.Path: %q must start with /", c.Path))
	}
	return errors.Join(errs...)
}

func (c PrometheusConfig) addr() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

func (c PrometheusConfig) path() string {
	if c.Path == "" {
		return "/metrics"
	}
	return c.Path
}

// metricsServer serves a gatherer's metrics over HTTP.
type metricsServer struct {
	cfg  PrometheusConfig
	http *http.Server
	ln   net.Listener
	done chan struct{} // closed when Serve returns
}

func newMetricsServer(cfg PrometheusConfig, g prometheus.Gatherer, log *slog.Logger) *metricsServer {
	mux := http.NewServeMux()
	mux.Handle(cfg.path(), promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	return &metricsServer{
		cfg:  cfg,
		http: httpserve.New(mux, slog.NewLogLogger(log.Handler(), slog.LevelWarn)),
		done: make(chan struct{}),
	}
}

// start listens and serves in a goroutine that stop ends.
func (m *metricsServer) start(log *slog.Logger) error {
	ln, err := net.Listen("tcp", m.cfg.addr())
	if err != nil {
		return fmt.Errorf("setting Prometheus: listen on %s: %w", m.cfg.addr(), err)
	}
	m.ln = ln
	go func() {
		defer close(m.done)
		if err := m.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	return nil
}

// stop lets scrapes in progress finish within ctx, then closes. It is
// safe on a nil or never started server, and twice.
func (m *metricsServer) stop(ctx context.Context) {
	if m == nil || m.ln == nil {
		return
	}
	if err := m.http.Shutdown(ctx); err != nil {
		m.http.Close()
	}
	<-m.done
}

// gathererOf is what the Prometheus section serves: the registry the
// server's metrics go to, which must also be a prometheus.Gatherer.
func gathererOf(reg prometheus.Registerer) (prometheus.Gatherer, error) {
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	g, ok := reg.(prometheus.Gatherer)
	if !ok {
		return nil, errors.New("setting Prometheus: the registerer given with WithRegisterer is not a prometheus.Gatherer, so its metrics cannot be served; pass a *prometheus.Registry")
	}
	return g, nil
}
