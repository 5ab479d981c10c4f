package node

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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

// hostileHTTP is one request a stranger sends the agent's HTTP endpoint.
type hostileHTTP struct {
	method, path string
	header       map[string]string
	// want is the status wanted; 0 takes any below 500.
	want int
}

// Every path of the agent's HTTP endpoint answers absurd requests (huge
// headers, long URLs, unknown paths, bad query values) with a clean
// status below 500 and keeps serving; a profile's duration is checked
// before the profile starts.
func TestHTTPEndpointAnswersHostileRequestsCleanly(t *testing.T) {
	n := startNode(t, testConfig(t))
	long := strings.Repeat("a", 10<<10)
	cases := []hostileHTTP{
		{method: "GET", path: "/nope", want: http.StatusNotFound},
		{method: "GET", path: "/" + long, want: http.StatusNotFound},
		{method: "GET", path: "/ui/" + strings.Repeat("x", 900<<10)},
		{method: "GET", path: "/metrics", header: map[string]string{"X-Big": strings.Repeat("h", 128<<10)}, want: http.StatusRequestHeaderFieldsTooLarge}, // over httpserve.MaxHeaderBytes, under net/http's 1 MiB
		{method: "BREW", path: "/ui/api/services", want: http.StatusMethodNotAllowed},
		{method: "GET", path: "/ui/api/services/" + long, want: http.StatusBadRequest},
		{method: "GET", path: "/ui/api/services/..%2F..%2Fetc%2Fpasswd", want: http.StatusBadRequest},
		{method: "GET", path: "/ui/api/services/a%00b", want: http.StatusBadRequest},
		{method: "GET", path: "/ui/api/services/no-such.rpc", want: http.StatusOK},
		{method: "GET", path: "/ui/api/repair?blob=%00%ff" + long},
		{method: "GET", path: "/ui/api/nope", want: http.StatusNotFound},
		{method: "GET", path: "/ui/static/..%2f..%2f..%2fetc%2fpasswd"},
		{method: "GET", path: "/ui/static/" + long, want: http.StatusNotFound},
		{method: "GET", path: "/debug/zrpc/config?%zz=%zz&a=" + long, want: http.StatusOK},
		{method: "GET", path: "/debug/zrpc/logs?n=-1", want: http.StatusOK},
		{method: "GET", path: "/debug/pprof/nope", want: http.StatusNotFound},
		{method: "GET", path: "/debug/pprof/heap?seconds=-1", want: http.StatusBadRequest},
		{method: "GET", path: "/debug/pprof/heap?debug=-99999999999999999999", want: http.StatusOK},
		{method: "GET", path: "/debug/pprof/profile?seconds=abc", want: http.StatusBadRequest},
		{method: "GET", path: "/debug/pprof/profile?seconds=-5", want: http.StatusBadRequest},
		{method: "GET", path: "/debug/pprof/profile?seconds=99999999999", want: http.StatusBadRequest},
		{method: "GET", path: "/debug/pprof/trace?seconds=NaN", want: http.StatusBadRequest},
		{method: "GET", path: "/debug/pprof/trace?seconds=1e300", want: http.StatusBadRequest},
		{method: "POST", path: "/debug/pprof/symbol", want: http.StatusOK},
	}
	for _, c := range cases {
		name := c.method + " " + c.path[:min(len(c.path), 60)]
		req, err := http.NewRequestWithContext(ctxT(t), c.method, "http://"+n.HTTPAddr()+c.path, strings.NewReader(long))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for k, v := range c.header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("%s: %v (the agent dropped the connection?)", name, err)
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		if resp.StatusCode >= 500 || c.want != 0 && resp.StatusCode != c.want {
			t.Errorf("%s: %d %q, want %v (0: any below 500)", name, resp.StatusCode, body[:min(len(body), 200)], c.want)
		}
		httpGet(t, n, "/healthz")
	}
}

// A second CPU profile asked for while one runs is refused with 409
// saying one runs, not with pprof's 500.
func TestSecondCPUProfileIsAConflict(t *testing.T) {
	n := startNode(t, testConfig(t))
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + n.HTTPAddr() + path)
		if err != nil {
			t.Errorf("GET %s: %v", path, err)
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The first profile gets a head start; on a busy machine the second
	// may still arrive first (and leave the first the 409) or after the
	// first ended: then both are tried again.
	for attempt := 1; ; attempt++ {
		first := make(chan int, 1)
		go func() {
			code, _ := get("/debug/pprof/profile?seconds=3")
			first <- code
		}()
		time.Sleep(300 * time.Millisecond)
		code, body := get("/debug/pprof/profile?seconds=1")
		firstCode := <-first
		if code == http.StatusConflict {
			if !strings.Contains(body, "a CPU profile is being taken already") {
				t.Fatalf("the second profile was refused with %q, want the reason", body)
			}
			if firstCode != http.StatusOK {
				t.Fatalf("the first profile answered %d", firstCode)
			}
			return
		}
		if code != http.StatusOK || firstCode != http.StatusConflict && firstCode != http.StatusOK {
			t.Fatalf("two profiles at once answered %d (first) and %d (second): want one 200 and one 409", firstCode, code)
		}
		if attempt == 5 {
			t.Fatal("the second profile came first in 5 attempts out of 5")
		}
	}
}
