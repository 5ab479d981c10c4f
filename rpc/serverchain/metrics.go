package serverchain

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/internal/methodtable"
	"github.com/zrpcio/zrpc/internal/warnrate"
)

// DefaultSlowThreshold is the slow-call log threshold used when Metrics is
// given 0.
const DefaultSlowThreshold = 500 * time.Millisecond

// numCodes is the number of canonical gRPC codes (OK..Unauthenticated).
const numCodes = int(codes.Unauthenticated) + 1

// metrics records zrpc_server_* metrics and logs slow or failed calls.
// Per-method children are curried once and cached, so a call does no label
// lookups or allocations.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
	log      *slog.Logger
	slow     time.Duration // <0: never log slow calls
	now      func() time.Time
	methods  methodtable.Table[*methodMetrics]
	// logged lets one line through per method and code each logQuiet:
	// an overloaded server, whose every call is slow, would otherwise
	// write a line per call and slow itself further.
	logged *warnrate.Limiter
}

// logQuiet is how often the slow or failed calls of one method and code
// are logged at most; the line says how many were held back.
const logQuiet = time.Second

type methodMetrics struct {
	label    string // the method, or OtherMethod
	duration prometheus.Observer
	byCode   [numCodes]atomic.Pointer[prometheus.Counter]
}

// Metrics counts calls in zrpc_server_requests_total{method,code}, times them
// in zrpc_server_request_duration_seconds{method} and tracks
// zrpc_server_in_flight (past MaxMethods methods, further ones share the
// method label OtherMethod). It logs, at Warn, only unary calls slower
// than slow (0 means DefaultSlowThreshold, negative disables) and calls
// failing with Internal, Unknown or DataLoss, one line per method and
// code a second (held_back says how many more there were). Collectors already
// registered in reg (by an earlier call) are reused; a nil reg leaves
// them unregistered. It panics if reg rejects them for another reason,
// like prometheus.MustRegister.
func Metrics(reg prometheus.Registerer, log *slog.Logger, slow time.Duration) Interceptor {
	m := newMetrics(reg, log, slow, time.Now)
	return Interceptor{
		Unary: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
			start := m.begin()
			resp, err = handler(ctx, req)
			m.end(ctx, info.FullMethod, start, false, err)
			return resp, err
		},
		Stream: func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			start := m.begin()
			err := handler(srv, ss)
			m.end(ss.Context(), info.FullMethod, start, true, err)
			return err
		},
	}
}

func newMetrics(reg prometheus.Registerer, log *slog.Logger, slow time.Duration, now func() time.Time) *metrics {
	if slow == 0 {
		slow = DefaultSlowThreshold
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zrpc_server_requests_total",
			Help: "gRPC calls handled by the server, by method and status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "zrpc_server_request_duration_seconds",
			Help:    "Time spent handling gRPC calls, by method.",
			Buckets: prometheus.DefBuckets,
		}, []string{"method"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "zrpc_server_in_flight",
			Help: "gRPC calls being handled now.",
		}),
		log:    orDiscard(log),
		slow:   slow,
		now:    now,
		logged: warnrate.New(logQuiet, 2*MaxMethods, now),
	}
	m.requests = mustRegister(reg, m.requests)
	m.duration = mustRegister(reg, m.duration)
	m.inFlight = mustRegister(reg, m.inFlight)
	return m
}

// mustRegister registers c, or returns the collector already registered
// under the same descriptor.
func mustRegister[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	if reg == nil {
		return c
	}
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(T); ok {
			return existing
		}
	}
	panic("serverchain: register metrics: " + err.Error())
}

func (m *metrics) begin() time.Time {
	m.inFlight.Inc()
	return m.now()
}

func (m *metrics) end(ctx context.Context, method string, start time.Time, stream bool, err error) {
	m.endAt(ctx, method, start, m.now(), stream, err)
}

// endAt records a call (a stream when stream is set) that started at
// start and ended at end.
func (m *metrics) endAt(ctx context.Context, method string, start, end time.Time, stream bool, err error) {
	elapsed := end.Sub(start)
	m.inFlight.Dec()
	code := codeOf(err)
	mm := m.forMethod(method)
	mm.duration.Observe(elapsed.Seconds())
	mm.counter(m.requests, code).Inc()
	if !m.shouldLog(elapsed, stream, code) {
		return
	}
	if pass, held := m.logged.Seen(mm.label + " " + code.String()); pass {
		m.log.LogAttrs(ctx, slog.LevelWarn, "rpc slow or failed",
			slog.String("method", method),
			slog.String("code", code.String()),
			slog.Duration("elapsed", elapsed),
			slog.Any("err", err),
			slog.Int("held_back", held))
	}
}

// shouldLog reports whether a call is logged: when it failed with a code
// that means a bug or lost data, or when a unary call was slow. A stream
// lasts as long as its client keeps it open, so its length is no sign of
// a slow server.
func (m *metrics) shouldLog(elapsed time.Duration, stream bool, code codes.Code) bool {
	switch code {
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return true
	}
	return !stream && m.slow >= 0 && elapsed >= m.slow
}

func (m *metrics) forMethod(method string) *methodMetrics {
	return m.methods.Get(method, m.newMethodMetrics)
}

func (m *metrics) newMethodMetrics(label string) *methodMetrics {
	return &methodMetrics{label: label, duration: m.duration.WithLabelValues(label)}
}

func (mm *methodMetrics) counter(vec *prometheus.CounterVec, code codes.Code) prometheus.Counter {
	if int(code) >= numCodes {
		return vec.WithLabelValues(mm.label, code.String())
	}
	if c := mm.byCode[code].Load(); c != nil {
		return *c
	}
	c := vec.WithLabelValues(mm.label, code.String())
	mm.byCode[code].Store(&c)
	return c
}

// codeOf maps a handler error to the code grpc-go will send, including its
// translation of bare context errors.
func codeOf(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return status.FromContextError(err).Code()
}
