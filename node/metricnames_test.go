package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/promconv"
)

// scrapeAgent starts an agent, gives every metric family it defines at
// least one series (a registration, a read, a watch; a panic and an ACL
// refusal are recorded through the hooks the interceptors call), and
// returns the families its /metrics serves, by name.
func scrapeAgent(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	n := startNode(t, testConfig(t))
	_, c := dial(t, n.GRPCAddr())
	if _, err := c.Register(ctxT(t), &pb.RegisterRequest{Instance: inst("user.rpc", "u1", "127.0.0.1:9001")}); err != nil {
		t.Fatal(err)
	}
	getInstances(t, c, "user.rpc")
	w, err := c.Watch(ctxT(t), &pb.WatchRequest{Service: "user.rpc"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	// A second agent, so that gossip measures a member's clock.
	peer := testConfig(t)
	peer.Name, peer.Join = "n2", []string{n.gossip().LocalAddr()}
	startedNode(t, peer)
	waitFor(t, 20*time.Second, "gossip to measure the second agent's clock", func() bool {
		_, ok := n.gossip().ClockOffset("n2")
		return ok
	})
	n.metrics.observePanic("/zrpc.v1.Registry/Get")
	n.metrics.observeACLRefusal("/zrpc.v1.Registry/Get", codes.PermissionDenied)
	fams := scrapeMetrics(t, n.HTTPAddr())

	// The metrics only an agent with TLS serves, from one with a cluster
	// token (its HTTP endpoint is plain, as every agent's).
	cfg := testConfig(t)
	cfg.Name, cfg.ClusterToken = "tls1", strings.Repeat("k", 40)
	for name, mf := range scrapeMetrics(t, startNode(t, cfg).HTTPAddr()) {
		if _, ok := fams[name]; !ok {
			fams[name] = mf
		}
	}
	return fams
}

// scrapeMetrics reads and parses the /metrics of the agent whose HTTP
// endpoint is at addr.
func scrapeMetrics(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// zrpcFamilies returns the families zrpc defines (not the Go runtime's or
// the process's), sorted by name.
func zrpcFamilies(fams map[string]*dto.MetricFamily) []*dto.MetricFamily {
	var out []*dto.MetricFamily
	for name, mf := range fams {
		if strings.HasPrefix(name, promconv.Prefix) {
			out = append(out, mf)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

// TestAgentMetricsFollowPrometheusNamingConventions: every zrpc_* metric
// an agent serves passes promconv.Lint (counters end in _total, times in
// _seconds, sizes in _bytes, help text, base units), and
// docs/metrics.md lists exactly them. ZRPC_UPDATE_DOCS=1 (make docs)
// rewrites the list.
func TestAgentMetricsFollowPrometheusNamingConventions(t *testing.T) {
	fams := zrpcFamilies(scrapeAgent(t))
	if len(fams) < 20 {
		t.Fatalf("the agent served %d zrpc_* families; want every one it defines", len(fams))
	}
	problems, err := promconv.Lint(fams)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("breaks a naming convention: %s", p)
	}
	checkMetricsReference(t, fams)
}

const (
	metricsDoc        = "../docs/metrics.md"
	metricsTableBegin = "<!-- generated: the metrics table (make docs) -->\n"
	metricsTableEnd   = "<!-- end of the generated table -->\n"
)

// checkMetricsReference compares docs/metrics.md's generated table with
// fams.
func checkMetricsReference(t *testing.T, fams []*dto.MetricFamily) {
	t.Helper()
	doc, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	before, rest, ok1 := strings.Cut(string(doc), metricsTableBegin)
	_, after, ok2 := strings.Cut(rest, metricsTableEnd)
	if !ok1 || !ok2 {
		t.Fatalf("%s lacks the markers of its generated table", metricsDoc)
	}
	want := before + metricsTableBegin + metricsTable(fams) + metricsTableEnd + after
	if os.Getenv("ZRPC_UPDATE_DOCS") == "1" {
		if err := os.WriteFile(metricsDoc, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if string(doc) != want {
		t.Errorf("%s is out of date with the metrics an agent serves: run make docs", metricsDoc)
	}
}

// metricsTable renders one row per family: name, type, label names, help.
func metricsTable(fams []*dto.MetricFamily) string {
	var b strings.Builder
	b.WriteString("| metric | type | labels | what it measures |\n|---|---|---|---|\n")
	for _, mf := range fams {
		var labels []string
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				labels = append(labels, "`"+l.GetName()+"`")
			}
		}
		slices.Sort(labels)
		labels = slices.Compact(labels)
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", mf.GetName(), strings.ToLower(mf.GetType().String()),
			strings.Join(labels, ", "), strings.ReplaceAll(mf.GetHelp(), "|", `\|`))
	}
	return b.String()
}

// grafanaDashboard is the part of a Grafana dashboard JSON that holds
// queries: panels (nested in rows), their targets, and the templating
// variables.
type grafanaDashboard struct {
	Title      string         `json:"title"`
	Panels     []grafanaPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type grafanaPanel struct {
	Title   string         `json:"title"`
	Type    string         `json:"type"`
	Panels  []grafanaPanel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// queries returns every PromQL expression of d, each with where it is.
func (d grafanaDashboard) queries() map[string]string {
	out := map[string]string{}
	var walk func(ps []grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			for i, tg := range p.Targets {
				if tg.Expr != "" {
					out[fmt.Sprintf("panel %q, query %d", p.Title, i+1)] = tg.Expr
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		if json.Unmarshal(v.Query, &q) != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if json.Unmarshal(v.Query, &obj) == nil {
				q = obj.Query
			}
		}
		if q != "" {
			out[fmt.Sprintf("variable %q", v.Name)] = q
		}
	}
	return out
}

// TestAgentDashboardReadsOnlyMetricsAgentsServe: every metric named in
// docs/grafana/zrpc-agent.json's queries is served by a real agent's
// /metrics, and every label a query matches or groups on is one of those
// metrics' labels, so renaming or dropping a metric or a label fails here
// rather than on an operator's empty panel.
func TestAgentDashboardReadsOnlyMetricsAgentsServe(t *testing.T) {
	raw, err := os.ReadFile("../docs/grafana/zrpc-agent.json")
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("docs/grafana/zrpc-agent.json: %v", err)
	}
	queries := d.queries()
	if len(queries) < 15 {
		t.Fatalf("found %d queries in the dashboard; the panels were not read", len(queries))
	}
	// up is written by Prometheus itself for every scrape target.
	served := map[string]dto.MetricType{"up": dto.MetricType_GAUGE}
	labels := map[string]map[string]bool{}
	for name, mf := range scrapeAgent(t) {
		served[name] = mf.GetType()
		labels[name] = map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				labels[name][l.GetName()] = true
			}
		}
	}
	used := map[string]bool{}
	for where, q := range queries {
		names := promconv.PromQLMetricNames(q)
		if len(names) == 0 {
			t.Errorf("%s: no metric found in %q", where, q)
		}
		// Labels every series has once scraped, and those of the
		// families the query reads.
		known := map[string]bool{"job": true, "instance": true}
		for _, name := range names {
			fam, ok := promconv.Family(name, served)
			if !ok {
				t.Errorf("%s reads %s, which the agent does not serve (query: %s)", where, name, q)
				continue
			}
			used[fam] = true
			for l := range labels[fam] {
				known[l] = true
			}
			switch served[fam] {
			case dto.MetricType_HISTOGRAM:
				known["le"] = true
			case dto.MetricType_SUMMARY:
				known["quantile"] = true
			}
		}
		for _, l := range promconv.PromQLLabelNames(q) {
			if !known[l] {
				t.Errorf("%s matches or groups on label %q, which no metric it reads has (query: %s)", where, l, q)
			}
		}
	}
	// The dashboard covers each area the agent reports on.
	for _, prefix := range []string{"zrpc_registry_", "zrpc_raft_", "zrpc_gossip_", "zrpc_blob_", "zrpc_grpc_", "process_"} {
		if !slices.ContainsFunc(sortedKeys(used), func(f string) bool { return strings.HasPrefix(f, prefix) }) {
			t.Errorf("no panel reads a %s* metric", prefix)
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
