package rpc_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// receivedSpan is one span as an OTLP collector got it.
type receivedSpan struct {
	service, name     string
	kind              tracepb.Span_SpanKind
	trace, id, parent string // hex; parent empty for a root span
}

func (s receivedSpan) String() string {
	return fmt.Sprintf("%s %s %s trace=%s id=%s parent=%s", s.service, s.kind, s.name, s.trace, s.id, s.parent)
}

// otlpReceiver is an in-process OTLP trace collector on loopback: gRPC
// (Addr) and HTTP (HTTPAddr, path /v1/traces).
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	Addr, HTTPAddr string

	mu      sync.Mutex
	spans   []receivedSpan
	headers []map[string]string // per export, the headers asked for by want
	want    []string
}

// startOTLPReceiver serves until the test ends; it records the values of
// the headers named in wantHeaders with each export.
func startOTLPReceiver(t *testing.T, wantHeaders ...string) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{want: wantHeaders}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(gs, r)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	r.Addr = ln.Addr().String()

	hln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.serveHTTP)
	hs := &http.Server{Handler: mux}
	go hs.Serve(hln)
	t.Cleanup(func() { hs.Close() })
	r.HTTPAddr = hln.Addr().String()
	return r
}

func (r *otlpReceiver) Export(ctx context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	get := func(k string) string {
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			if v := md.Get(k); len(v) > 0 {
				return v[0]
			}
		}
		return ""
	}
	r.record(req, get)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (r *otlpReceiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	var export collectortrace.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(body, &export)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.record(&export, req.Header.Get)
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

func (r *otlpReceiver) record(req *collectortrace.ExportTraceServiceRequest, header func(string) string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.want) > 0 {
		h := map[string]string{}
		for _, k := range r.want {
			h[k] = header(k)
		}
		r.headers = append(r.headers, h)
	}
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				r.spans = append(r.spans, receivedSpan{
					service: service, name: s.Name, kind: s.Kind,
					trace: hex.EncodeToString(s.TraceId), id: hex.EncodeToString(s.SpanId), parent: hex.EncodeToString(s.ParentSpanId),
				})
			}
		}
	}
}

// Spans returns the spans received so far.
func (r *otlpReceiver) Spans() []receivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedSpan(nil), r.spans...)
}

// Headers returns, per export so far, the headers asked for.
func (r *otlpReceiver) Headers() []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]map[string]string(nil), r.headers...)
}

func (r *otlpReceiver) explain() string {
	var b strings.Builder
	for _, s := range r.Spans() {
		fmt.Fprintln(&b, s)
	}
	return "spans received:\n" + b.String()
}
