package node

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// On a loopback listener every path of the agent's HTTP endpoint (the UI,
// metrics, profiles, logs) answers only requests for localhost or a
// loopback IP, so that a web page whose name was rebound to 127.0.0.1
// cannot read it from the operator's browser; elsewhere any Host is
// answered.
func TestLoopbackHTTPEndpointRefusesOtherHostNames(t *testing.T) {
	mux := http.NewServeMux()
	for _, p := range []string{"/ui/", "/metrics", "/debug/pprof/", "/debug/zrpc/logs"} {
		mux.HandleFunc(p, func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	}
	for _, c := range []struct {
		bind string
		host string
		want int
	}{
		{"127.0.0.1", "127.0.0.1:8480", http.StatusOK},
		{"127.0.0.1", "localhost:8480", http.StatusOK},
		{"127.0.0.1", "LOCALHOST", http.StatusOK},
		{"127.0.0.1", "ui.localhost:8480", http.StatusOK},
		{"127.0.0.1", "[::1]:8480", http.StatusOK},
		{"::1", "127.0.0.2:8480", http.StatusOK},
		{"127.0.0.1", "attacker.example:8480", http.StatusForbidden},
		{"127.0.0.1", "10.0.0.1:8480", http.StatusForbidden},
		{"127.0.0.1", "localhost.attacker.example", http.StatusForbidden},
		{"0.0.0.0", "agent-1.example:8480", http.StatusOK},
		{"10.1.2.3", "agent-1.example:8480", http.StatusOK},
	} {
		h := loopbackOnly(c.bind, mux)
		for _, path := range []string{"/ui/", "/metrics", "/debug/pprof/", "/debug/zrpc/logs"} {
			req := httptest.NewRequest(http.MethodGet, path, nil)
			req.Host = c.host
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.want {
				t.Errorf("bind %s, Host %q, GET %s: %d %s, want %d", c.bind, c.host, path, rec.Code, rec.Body, c.want)
			}
			if c.want == http.StatusForbidden && !strings.Contains(rec.Body.String(), "DNS rebinding") {
				t.Errorf("Host %q refused with %s, want the reason", c.host, rec.Body)
			}
		}
	}
}
