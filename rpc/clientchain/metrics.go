package clientchain

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/internal/methodtable"
)

// numCodes is the number of gRPC status codes (OK through Unauthenticated).
const numCodes = int(codes.Unauthenticated) + 1

// clientMetrics holds the collectors and, per method, the curried series, so a
// call does one sync.Map lookup and no label hashing or allocation.
type clientMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
	retries  *prometheus.CounterVec
	rejected *prometheus.CounterVec
	// methods holds the series of at most methodtable.Max methods; calls
	// of further ones (a gateway forwarding names its callers choose)
	// share the method label methodtable.Other.
	methods methodtable.Table[*methodMetrics]
}

type methodMetrics struct {
	label    string // the method, or methodtable.Other
	duration prometheus.Observer
	retries  prometheus.Counter
	rejected prometheus.Counter
	// byCode is filled on first use of each code, so only codes that occur
	// appear as series.
	byCode [numCodes]atomic.Pointer[prometheus.Counter]
}

// newClientMetrics registers zrpc_client_requests_total{method,code} and
// zrpc_client_request_duration_seconds{method} with reg. If they are already
// registered (a second ClientConn on the same registry), the existing
// collectors are shared.
func newClientMetrics(reg prometheus.Registerer) (*clientMetrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "zrpc_client_requests_total",
		Help: "Client calls by full method and gRPC status code, counted once per call (not per retry).",
	}, []string{"method", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "zrpc_client_request_duration_seconds",
		Help:    "Duration of client calls by full method, retries and backoff included.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"method"})
	inFlight := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "zrpc_client_in_flight", Help: "Client calls in flight.",
	})
	retries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "zrpc_client_retries_total", Help: "Client call attempts after the first, by full method.",
	}, []string{"method"})
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "zrpc_client_breaker_rejections_total", Help: "Client calls the circuit breaker refused, by full method.",
	}, []string{"method"})
	var err error
	if requests, err = register(reg, requests); err != nil {
		return nil, err
	}
	if duration, err = register(reg, duration); err != nil {
		return nil, err
	}
	if inFlight, err = register(reg, inFlight); err != nil {
		return nil, err
	}
	if retries, err = register(reg, retries); err != nil {
		return nil, err
	}
	if rejected, err = register(reg, rejected); err != nil {
		return nil, err
	}
	return &clientMetrics{requests: requests, duration: duration, inFlight: inFlight, retries: retries, rejected: rejected}, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

func (m *clientMetrics) method(method string) *methodMetrics {
	return m.methods.Get(method, func(label string) *methodMetrics {
		return &methodMetrics{
			label:    label,
			duration: m.duration.WithLabelValues(label),
			retries:  m.retries.WithLabelValues(label),
			rejected: m.rejected.WithLabelValues(label),
		}
	})
}

// retried counts an attempt after the first of a call of method.
func (m *clientMetrics) retried(method string) { m.method(method).retries.Inc() }

// rejectedCall counts a call of method the breaker refused.
func (m *clientMetrics) rejectedCall(method string) { m.method(method).rejected.Inc() }

func (m *clientMetrics) observe(method string, start time.Time, err error) {
	mm := m.method(method)
	mm.duration.Observe(time.Since(start).Seconds())
	code := status.Code(err)
	if int(code) >= numCodes {
		code = codes.Unknown
	}
	slot := &mm.byCode[code]
	c := slot.Load()
	if c == nil {
		counter := m.requests.WithLabelValues(mm.label, code.String())
		slot.CompareAndSwap(nil, &counter)
		c = slot.Load()
	}
	(*c).Inc()
}

// Metrics returns an interceptor that counts calls in
// zrpc_client_requests_total{method,code} and observes
// zrpc_client_request_duration_seconds{method}, registered with reg. It
// panics if reg refuses the collectors for a reason other than their being
// registered already (then the registered ones are shared).
func Metrics(reg prometheus.Registerer) grpc.UnaryClientInterceptor {
	return interceptor(&metricsStage{m: mustMetrics(reg), next: invokerStage{}})
}

// MetricsStream is [Metrics] for streams: a stream is counted when it ends
// (RecvMsg returns an error, io.EOF counting as OK, or the one answer of a
// client-streaming method) or fails to start.
func MetricsStream(reg prometheus.Registerer) grpc.StreamClientInterceptor {
	return metricsStream(mustMetrics(reg))
}

func mustMetrics(reg prometheus.Registerer) *clientMetrics {
	m, err := newClientMetrics(reg)
	if err != nil {
		panic("clientchain: register metrics: " + err.Error())
	}
	return m
}

type metricsStage struct {
	m    *clientMetrics
	next unaryStage
}

func (s *metricsStage) invoke(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts []grpc.CallOption) error {
	start := time.Now()
	s.m.inFlight.Inc()
	err := s.next.invoke(ctx, method, req, reply, cc, inv, opts)
	s.m.inFlight.Dec()
	s.m.observe(method, start, err)
	return err
}

func metricsStream(m *clientMetrics) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		start := time.Now()
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			m.observe(method, start, err)
			return nil, err
		}
		return watchEnd(cs, desc, func(err error) { m.observe(method, start, err) }), nil
	}
}

// endWatchStream calls onEnd once, when RecvMsg first returns an error
// (io.EOF is reported as nil: the stream ended cleanly) or, for a stream
// whose server answers once (client-streaming), returns that answer: grpc
// ends such a stream there.
type endWatchStream struct {
	grpc.ClientStream
	onEnd     func(error)
	oneAnswer bool // the server sends one message (desc.ServerStreams unset)
	done      atomic.Bool
}

// watchEnd returns cs, of a stream described by desc, calling onEnd when it
// ends (see endWatchStream).
func watchEnd(cs grpc.ClientStream, desc *grpc.StreamDesc, onEnd func(error)) *endWatchStream {
	return &endWatchStream{ClientStream: cs, onEnd: onEnd, oneAnswer: desc != nil && !desc.ServerStreams}
}

func (s *endWatchStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if (err != nil || s.oneAnswer) && s.done.CompareAndSwap(false, true) {
		if err == io.EOF {
			s.onEnd(nil)
		} else {
			s.onEnd(err)
		}
	}
	return err
}
