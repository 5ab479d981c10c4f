package promconv

import (
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

func family(name, help string, t dto.MetricType) *dto.MetricFamily {
	return &dto.MetricFamily{Name: proto.String(name), Help: proto.String(help), Type: t.Enum()}
}

func TestLintFindsEachBrokenConvention(t *testing.T) {
	const (
		counter   = dto.MetricType_COUNTER
		gauge     = dto.MetricType_GAUGE
		histogram = dto.MetricType_HISTOGRAM
	)
	for _, tc := range []struct {
		mf      *dto.MetricFamily
		problem string // "" when the family follows every convention
	}{
		{family("zrpc_registry_instances", "Registered instances.", gauge), ""},
		{family("zrpc_raft_apply_duration_seconds", "Time to apply.", histogram), ""},
		{family("zrpc_blob_put_bytes_total", "Blob bytes stored.", counter), ""},
		{family("zrpc_raft_last_contact_seconds", "Seconds since the leader was heard.", gauge), ""},
		{family("zrpc_grpc_server_handled", "Calls.", counter), `"_total" suffix`},
		{family("zrpc_registry_watchers_total", "Open watches.", gauge), `non-counter`},
		{family("zrpc_raft_apply_duration", "Time to apply.", histogram), "in seconds"},
		{family("zrpc_raft_apply_latency_ms", "Apply latency.", histogram), "in seconds"},
		{family("zrpc_raft_last_contact", "Seconds since the leader was heard.", gauge), "in seconds"},
		{family("zrpc_leader_age", "How long this agent has led.", gauge), "in seconds"},
		{family("zrpc_registry_size", "Encoded bytes of all instances.", gauge), "in bytes"},
		{family("zrpc_blob_put_kilobytes_total", "Blob data stored.", counter), "base unit"},
		{family("zrpc_blob_scrubbed_total", "Bytes re-read by the scrubber.", counter), "in bytes"},
		{family("raft_leader", "1 on the leader.", gauge), `start with "zrpc_"`},
		{family("zrpc_raft_leader", "", gauge), "help"},
		{family("zrpc_raftLeader", "1 on the leader.", gauge), "snake_case"},
	} {
		got, err := Lint([]*dto.MetricFamily{tc.mf})
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case tc.problem == "" && len(got) > 0:
			t.Errorf("%s: %v; want no problem", tc.mf.GetName(), got)
		case tc.problem != "" && !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, tc.problem) }):
			t.Errorf("%s: %v; want a problem mentioning %q", tc.mf.GetName(), got, tc.problem)
		}
	}
}

func TestPromQLMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum by (health) (zrpc_registry_instances{job="$job"})`, []string{"zrpc_registry_instances"}},
		{`histogram_quantile(0.99, sum by (le) (rate(zrpc_grpc_server_handling_seconds_bucket{instance=~"$instance"}[$__rate_interval])))`,
			[]string{"zrpc_grpc_server_handling_seconds_bucket"}},
		{`scalar(max(zrpc_raft_commit_index)) - zrpc_raft_applied_index`, []string{"zrpc_raft_applied_index", "zrpc_raft_commit_index"}},
		{`sum(rate(zrpc_grpc_server_handled_total{code!="OK"}[5m])) / ignoring(code) sum(rate(zrpc_grpc_server_handled_total[5m]))`,
			[]string{"zrpc_grpc_server_handled_total"}},
		{`rate(process_cpu_seconds_total[1m]) * 100 > 1e3 and on (instance) up`, []string{"process_cpu_seconds_total", "up"}},
		{`label_values(zrpc_raft_state, instance)`, []string{"zrpc_raft_state"}},
		{`max(zrpc_raft_term) offset 5m`, []string{"zrpc_raft_term"}},
		{`${datasource}`, nil},
	} {
		if got := PromQLMetricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("PromQLMetricNames(%s) = %v; want %v", tc.expr, got, tc.want)
		}
	}
}

func TestFamilyOfHistogramSeries(t *testing.T) {
	fams := map[string]dto.MetricType{
		"zrpc_raft_apply_duration_seconds": dto.MetricType_HISTOGRAM,
		"zrpc_registry_instances":          dto.MetricType_GAUGE,
	}
	for _, tc := range []struct {
		name, family string
		ok           bool
	}{
		{"zrpc_raft_apply_duration_seconds_bucket", "zrpc_raft_apply_duration_seconds", true},
		{"zrpc_raft_apply_duration_seconds_count", "zrpc_raft_apply_duration_seconds", true},
		{"zrpc_registry_instances", "zrpc_registry_instances", true},
		{"zrpc_registry_instances_count", "", false},
		{"zrpc_registry_gone", "", false},
	} {
		f, ok := Family(tc.name, fams)
		if f != tc.family || ok != tc.ok {
			t.Errorf("Family(%s) = %q, %v; want %q, %v", tc.name, f, ok, tc.family, tc.ok)
		}
	}
}

func TestPromQLLabelNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum by (health) (zrpc_registry_instances{job="$job"})`, []string{"health", "job"}},
		{`histogram_quantile(0.99, sum by (le, method) (rate(x_bucket{instance=~"$instance", code!="OK"}[5m])))`, []string{"code", "instance", "le", "method"}},
		{`a / ignoring(code) b`, []string{"code"}},
		{`label_values(zrpc_raft_state{job="$job"}, instance)`, []string{"job"}},
		{`x{path="a=b,c"}`, []string{"path"}},
	} {
		if got := PromQLLabelNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("PromQLLabelNames(%s) = %v; want %v", tc.expr, got, tc.want)
		}
	}
}
