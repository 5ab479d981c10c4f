package node

import (
	"fmt"
	"net"
	"net/http"
	"strings"
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
