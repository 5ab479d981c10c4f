package node

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

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
	n.metrics.observePanic("/zrpc.v1.Registry/Get")
	n.metrics.observeACLRefusal("/zrpc.v1.Registry/Get", codes.PermissionDenied)

	resp, err := http.Get("http://" + n.HTTPAddr() + "/metrics")
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
