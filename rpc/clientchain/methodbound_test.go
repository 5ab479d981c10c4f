package clientchain

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zrpcio/zrpc/internal/methodtable"
)

// TestClientMetricsBoundTheMethodsTheyName: a client calling method names
// its own callers choose (a gateway) keeps a series for at most
// methodtable.Max methods; calls of further ones share the label
// methodtable.Other.
func TestClientMetricsBoundTheMethodsTheyName(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newClientMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range methodtable.Max + 50 {
		m.observe(fmt.Sprintf("/gw/M%d", i), time.Now(), nil)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "zrpc_client_requests_total" {
			continue
		}
		methods := map[string]bool{}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "method" {
					methods[l.GetValue()] = true
				}
			}
		}
		if len(methods) != methodtable.Max+1 || !methods[methodtable.Other] {
			t.Fatalf("zrpc_client_requests_total names %d methods (%q among them: %v), want %d with %q",
				len(methods), methodtable.Other, methods[methodtable.Other], methodtable.Max+1, methodtable.Other)
		}
		return
	}
	t.Fatal("no zrpc_client_requests_total series")
}
