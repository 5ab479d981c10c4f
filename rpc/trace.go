package rpc

import (
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// Tracing is off by default: with no tracer provider, no span is created
// and no tracing work is done per call. With one, calls are traced through
// OpenTelemetry's gRPC stats handlers, and W3C traceparent/tracestate and
// baggage travel in the metadata, so a trace spans every hop. The
// Telemetry section of ServerConfig and ClientConfig builds the provider
// and its OTLP exporter from configuration (telemetry.go).

func otelOptions(tp trace.TracerProvider) []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithPropagators(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})),
	}
}

// WithServerTracing traces every call the server handles with tp.
func WithServerTracing(tp trace.TracerProvider) ServerOption {
	return func(o *serverOptions) {
		o.traced = true
		o.grpcOpts = append(o.grpcOpts, grpc.StatsHandler(newServerStatsHandler(tp)))
	}
}

// WithTracing traces every call made through the connection with tp.
func WithTracing(tp trace.TracerProvider) DialOption {
	return func(o *dialOptions) {
		o.grpcOpts = append(o.grpcOpts, grpc.WithStatsHandler(newClientStatsHandler(tp)))
	}
}

func newServerStatsHandler(tp trace.TracerProvider) stats.Handler {
	return otelgrpc.NewServerHandler(otelOptions(tp)...)
}

func newClientStatsHandler(tp trace.TracerProvider) stats.Handler {
	return otelgrpc.NewClientHandler(otelOptions(tp)...)
}
