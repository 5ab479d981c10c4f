package serverchain

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMetrics(t *testing.T) {
	clock := newFakeClock()
	log, buf := testLogger(t)
	reg := prometheus.NewRegistry()
	m := newMetrics(reg, log, 100*time.Millisecond, clock.Now)

	calls := []struct {
		method string
		took   time.Duration
		err    error
		logged bool
	}{
		{"/svc/Fast", time.Millisecond, nil, false},
		{"/svc/Fast", 99 * time.Millisecond, nil, false},
		{"/svc/Slow", 150 * time.Millisecond, nil, true},
		{"/svc/Fast", time.Millisecond, status.Error(codes.NotFound, "no"), false},
		{"/svc/Fast", time.Millisecond, status.Error(codes.Internal, "bad"), true},
		{"/svc/Fast", time.Millisecond, errors.New("plain"), true}, // Unknown
		{"/svc/Fast", time.Millisecond, status.Error(codes.DataLoss, "lost"), true},
		{"/svc/Fast", time.Millisecond, context.DeadlineExceeded, false},
	}
	var wantLogged []string
	for i, c := range calls {
		start := m.begin()
		if got := sample(t, reg, "zrpc_server_in_flight", nil); got != 1 {
			t.Fatalf("call %d: in flight %v, want 1", i, got)
		}
		clock.Advance(c.took)
		m.end(context.Background(), c.method, start, false, c.err)
		if c.logged {
			wantLogged = append(wantLogged, c.method+" "+codeOf(c.err).String())
		}
	}
	for _, tc := range []struct {
		method, code string
		want         float64
	}{
		{"/svc/Fast", "OK", 2},
		{"/svc/Slow", "OK", 1},
		{"/svc/Fast", "NotFound", 1},
		{"/svc/Fast", "Internal", 1},
		{"/svc/Fast", "Unknown", 1},
		{"/svc/Fast", "DataLoss", 1},
		{"/svc/Fast", "DeadlineExceeded", 1},
	} {
		if got := sample(t, reg, "zrpc_server_requests_total", map[string]string{"method": tc.method, "code": tc.code}); got != tc.want {
			t.Errorf("requests{%s,%s} = %v, want %v", tc.method, tc.code, got, tc.want)
		}
	}
	if got := sample(t, reg, "zrpc_server_in_flight", nil); got != 0 {
		t.Errorf("in flight %v after calls, want 0", got)
	}
	if n := sample(t, reg, "zrpc_server_request_duration_seconds", map[string]string{"method": "/svc/Fast"}); n != 7 {
		t.Errorf("%v /svc/Fast durations observed, want 7", n)
	}
	lines := buf.Lines()
	if len(lines) != len(wantLogged) {
		t.Fatalf("logged %d lines, want %d (%v)", len(lines), len(wantLogged), wantLogged)
	}
	for i, w := range wantLogged {
		method, code, _ := strings.Cut(w, " ")
		if !strings.Contains(lines[i], "level=WARN") || !strings.Contains(lines[i], "method="+method) || !strings.Contains(lines[i], "code="+code) {
			t.Errorf("line %d = %q, want WARN %s", i, lines[i], w)
		}
	}
}

func TestMetricsInterceptorReusesRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := Metrics(reg, nil, 0)
	b := Metrics(reg, nil, 0) // must not panic: collectors are shared
	for _, ic := range []Interceptor{a, b} {
		_, _ = callBoth(context.Background(), ic, "/svc/M", nil)
	}
	got := sample(t, reg, "zrpc_server_requests_total", map[string]string{"method": "/svc/M", "code": "OK"})
	if got != 4 {
		t.Fatalf("requests = %v, want 4 (two interceptors x unary+stream)", got)
	}
}

// sample returns the value of the series of metric name whose labels
// include want: a counter's or gauge's value, a histogram's sample count.
// (prometheus/testutil would do, but it pulls in a module go.mod lacks.)
func sample(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

// Past MaxMethods methods (an unknown-service handler serves whatever
// names its callers send), further methods share one series, so a
// stranger cannot grow the metrics without end.
func TestMetricsBoundMethods(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg, nil, -1, newFakeClock().Now)
	for i := range MaxMethods + 50 {
		m.end(context.Background(), fmt.Sprintf("/stranger.Svc/M%d", i), m.begin(), false, nil)
	}
	m.end(context.Background(), "/stranger.Svc/M0", m.begin(), false, nil) // known: its own series
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if n := len(mf.GetMetric()); n > MaxMethods+1 {
			t.Errorf("%s has %d series after %d methods, want at most %d", mf.GetName(), n, MaxMethods+50, MaxMethods+1)
		}
	}
	if got := sample(t, reg, "zrpc_server_requests_total", map[string]string{"method": OtherMethod, "code": "OK"}); got != 50 {
		t.Errorf("requests{%s} = %v, want 50", OtherMethod, got)
	}
	if got := sample(t, reg, "zrpc_server_requests_total", map[string]string{"method": "/stranger.Svc/M0", "code": "OK"}); got != 2 {
		t.Errorf("requests{/stranger.Svc/M0} = %v, want 2", got)
	}
}

// A stream's length is set by its client: a long one is not logged as
// slow, a failed one is logged as a failed unary call is.
func TestMetricsDoNotLogLongStreams(t *testing.T) {
	clock := newFakeClock()
	log, buf := testLogger(t)
	m := newMetrics(nil, log, 100*time.Millisecond, clock.Now)
	start := m.begin()
	clock.Advance(time.Hour)
	m.end(context.Background(), "/svc/Watch", start, true, nil)
	if lines := buf.Lines(); len(lines) != 0 {
		t.Fatalf("a stream open for an hour logged %q", lines)
	}
	start = m.begin()
	clock.Advance(time.Hour)
	m.end(context.Background(), "/svc/Watch", start, true, status.Error(codes.Internal, "bad"))
	if lines := buf.Lines(); len(lines) != 1 || !strings.Contains(lines[0], "code=Internal") {
		t.Fatalf("a failed stream logged %q, want one Internal line", lines)
	}
}

// TestMetricsLogSlowCallsOncePerMethodASecond: an overloaded server whose
// every call is slow writes one line per method and code a second, the
// next saying how many were held back, not a line per call.
func TestMetricsLogSlowCallsOncePerMethodASecond(t *testing.T) {
	clock := newFakeClock()
	log, buf := testLogger(t)
	m := newMetrics(nil, log, 100*time.Millisecond, clock.Now)
	slow := func(method string) {
		start := m.begin()
		clock.Advance(200 * time.Millisecond)
		m.end(context.Background(), method, start, false, nil)
	}
	for range 4 { // 800 ms
		slow("/svc/Get")
	}
	slow("/svc/Put")
	if lines := buf.Lines(); len(lines) != 2 || !strings.Contains(lines[0], "/svc/Get") || !strings.Contains(lines[1], "/svc/Put") {
		t.Fatalf("5 slow calls of 2 methods within a second logged %q, want one line per method", lines)
	}
	slow("/svc/Get") // past the second
	lines := buf.Lines()
	if len(lines) != 3 || !strings.Contains(lines[2], "held_back=3") {
		t.Fatalf("the next slow call past the second logged %q, want a third line saying 3 were held back", lines)
	}
}
