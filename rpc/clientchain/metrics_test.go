package clientchain

import (
	"context"
	"maps"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// gathered returns, for metric family name, each series' value (counter
// value or histogram sample count) keyed by its label pairs "k=v,k=v".
// (prometheus/testutil needs a module this repo does not require.)
func gathered(t *testing.T, reg prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for i, l := range m.GetLabel() {
				if i > 0 {
					key += ","
				}
				key += l.GetName() + "=" + l.GetValue()
			}
			if h := m.GetHistogram(); h != nil {
				out[key] = float64(h.GetSampleCount())
			} else {
				out[key] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

func TestMetricsCountByCode(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	ic := Metrics(reg)
	f := script(unavailable(), nil, status.Error(codes.NotFound, "x"), nil)
	for range 4 {
		_ = call(t, ic, context.Background(), "/s/M", f.invoke)
	}
	// A second interceptor on the same registry shares the collectors.
	_ = call(t, Metrics(reg), context.Background(), "/s/N", script().invoke)

	wantCounts := map[string]float64{
		"code=NotFound,method=/s/M":    1,
		"code=OK,method=/s/M":          2,
		"code=OK,method=/s/N":          1,
		"code=Unavailable,method=/s/M": 1,
	}
	if got := gathered(t, reg, "zrpc_client_requests_total"); !maps.Equal(got, wantCounts) {
		t.Errorf("requests_total = %v, want %v", got, wantCounts)
	}
	wantDur := map[string]float64{"method=/s/M": 4, "method=/s/N": 1}
	if got := gathered(t, reg, "zrpc_client_request_duration_seconds"); !maps.Equal(got, wantDur) {
		t.Errorf("duration sample counts = %v, want %v", got, wantDur)
	}
}
