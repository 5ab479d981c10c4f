package rpc_test

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/rpc"
	"github.com/zrpcio/zrpc/rpc/clientchain"
)

const servicesDashboard = "../docs/grafana/zrpc-services.json"

// dashboardExprs returns the PromQL of every panel target of a Grafana
// dashboard, and of its query variables.
func dashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s is not a dashboard: %v", path, err)
	}
	var exprs []string
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		// label_values(series, label) reads series; label_values(label)
		// reads no metric.
		if m := labelValues.FindStringSubmatch(v.Definition); m != nil {
			exprs = append(exprs, m[1])
		} else if !strings.HasPrefix(v.Definition, "label_values(") {
			exprs = append(exprs, v.Definition)
		}
	}
	return exprs
}

var (
	labelValues    = regexp.MustCompile(`^label_values\((.+),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)$`)
	promqlNumbers  = regexp.MustCompile(`\b[0-9][0-9A-Za-z.]*`)
	promqlStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promqlGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promqlName     = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
)

// promqlMetrics returns the metric names an expression reads: every
// identifier that is not a function, a keyword, a label or a duration.
func promqlMetrics(expr string) []string {
	expr = promqlStrings.ReplaceAllString(expr, `""`)
	expr = promqlGrouping.ReplaceAllString(expr, " ")
	expr = promqlMatchers.ReplaceAllString(expr, " ")
	expr = promqlNumbers.ReplaceAllString(expr, " ")
	var names []string
	for _, loc := range promqlName.FindAllStringIndex(expr, -1) {
		name := expr[loc[0]:loc[1]]
		rest := strings.TrimLeft(expr[loc[1]:], " ")
		if strings.HasPrefix(rest, "(") || (loc[0] > 0 && expr[loc[0]-1] == '$') {
			continue // a function, or a Grafana variable
		}
		switch name {
		case "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset":
			continue
		}
		names = append(names, name)
	}
	return names
}

// exportedFamilies drives rpc's server and client chains through a
// successful call, a failing call the client retries, and a call its
// breaker rejects, and returns the metric families they export.
func exportedFamilies(t *testing.T) map[string]bool {
	t.Helper()
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	srv, err := rpc.NewServer(rpc.ServerConfig{Name: "dash.rpc", ListenOn: "127.0.0.1:0", NoRegister: true}, rpc.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	grpctest.RegisterEcho(srv.GRPC(), func(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		if string(in.Value) == "fail" {
			return nil, status.Error(codes.Unavailable, "failing on purpose")
		}
		return in, nil
	})
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(ctx) })

	chain := clientchain.DefaultConfig()
	chain.Breaker.Mode, chain.Breaker.Failures, chain.Breaker.OpenFor = clientchain.BreakerClassic, 1, time.Hour
	chain.Retry.Idempotent = []string{grpctest.EchoMethod}
	chain.Retry.BaseBackoff, chain.Retry.MaxBackoff = time.Millisecond, time.Millisecond
	conn, err := rpc.Dial(ctx, "direct:///"+srv.Addr(), rpc.WithChain(chain), rpc.WithMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	invoke := func(payload string) error {
		return conn.Invoke(ctx, grpctest.EchoMethod, wrapperspb.Bytes([]byte(payload)), &wrapperspb.BytesValue{})
	}
	if err := invoke("ok"); err != nil {
		t.Fatal(err)
	}
	if err := invoke("fail"); status.Code(err) != codes.Unavailable {
		t.Fatalf("failing call: %v, want Unavailable", err)
	}
	if err := invoke("ok"); err == nil {
		t.Fatal("the breaker, open after a failure, let a call through")
	}

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+s] = true
			}
		}
	}
	return names
}

// Every metric the services dashboard queries is one rpc's chains
// export, so renaming a metric fails here rather than blanking a panel.
func TestServicesDashboardQueriesOnlyExportedMetrics(t *testing.T) {
	exported := exportedFamilies(t)
	used := map[string]bool{}
	for _, expr := range dashboardExprs(t, servicesDashboard) {
		names := promqlMetrics(expr)
		if len(names) == 0 {
			t.Errorf("found no metric in %q", expr)
		}
		for _, n := range names {
			used[n] = true
			if !exported[n] {
				t.Errorf("%s queries %s, which rpc's chains do not export (they export %v)", servicesDashboard, n, slices.Sorted(maps.Keys(exported)))
			}
		}
	}
	// The panels a service's health needs are there.
	for _, n := range []string{"zrpc_server_requests_total", "zrpc_server_request_duration_seconds_bucket", "zrpc_server_in_flight",
		"zrpc_client_breaker_rejections_total", "zrpc_client_retries_total"} {
		if !used[n] {
			t.Errorf("%s has no panel of %s", servicesDashboard, n)
		}
	}
}

func TestPromQLMetricsFindsOnlyMetricNames(t *testing.T) {
	got := promqlMetrics(`histogram_quantile(0.99, sum by (le, method) (rate(a_bucket{job=~"$job",code!="OK"}[$__rate_interval]))) / on (x) b_total offset 5m`)
	if want := []string{"a_bucket", "b_total"}; !slices.Equal(got, want) {
		t.Errorf("promqlMetrics = %v, want %v", got, want)
	}
	if got := labelValues.FindStringSubmatch(`label_values(zrpc_server_requests_total{x="y"}, job)`); got == nil || got[1] != `zrpc_server_requests_total{x="y"}` {
		t.Errorf("label_values' series = %q", got)
	}
}
