package node

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// loopbackOnly guards an HTTP endpoint that listens on loopback: it answers
// only requests whose Host is localhost (or a name under .localhost) or a
// loopback IP. Any other name reaching a loopback listener can only come
// from DNS rebinding, a web page whose name was made to resolve to
// 127.0.0.1 reading the agent's UI, metrics, profiles or logs from the
// operator's browser. An endpoint bound elsewhere is returned unguarded.
func loopbackOnly(bind string, next http.Handler) http.Handler {
	if ip := net.ParseIP(bind); ip == nil || !ip.IsLoopback() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopbackHost(r.Host) {
			http.Error(w, fmt.Sprintf("this agent's HTTP endpoint listens on loopback and answers only requests for localhost or a loopback IP, "+
				"not for host %q (a guard against DNS rebinding): use http://127.0.0.1:<http_port>%s", r.Host, r.URL.Path), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// loopbackHost reports whether a request's Host names this machine's
// loopback: localhost (or a name under .localhost) or a loopback IP.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// maxProfileSeconds bounds the duration of a CPU profile or an execution
// trace asked for over HTTP (zrpcctl debug asks for at most an hour).
const maxProfileSeconds = 3600

// oneProfile is a profile handler of net/http/pprof (Profile, Trace)
// whose ?seconds= is checked before it starts, and of which one runs at a
// time: pprof takes a bad value for its default (30 s of profiling) and
// answers a second profile while one runs with 500.
type oneProfile struct {
	what    string // "CPU profile", "execution trace"
	integer bool   // seconds must be whole (pprof.Profile parses an int)
	serve   http.HandlerFunc
	running sync.Mutex
}

func (p *oneProfile) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if v := r.FormValue("seconds"); v != "" {
		s, err := strconv.ParseFloat(v, 64)
		if p.integer && err == nil {
			_, err = strconv.ParseInt(v, 10, 64)
		}
		if err != nil || !(s > 0 && s <= maxProfileSeconds) {
			what := "a number"
			if p.integer {
				what = "a whole number"
			}
			http.Error(w, fmt.Sprintf("seconds=%.40q: the %s's duration must be %s of seconds from 1 to %d", v, p.what, what, maxProfileSeconds), http.StatusBadRequest)
			return
		}
	}
	if !p.running.TryLock() {
		http.Error(w, fmt.Sprintf("a %s is being taken already, one at a time: retry when it ends", p.what), http.StatusConflict)
		return
	}
	defer p.running.Unlock()
	p.serve(w, r)
}
