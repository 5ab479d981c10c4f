package node

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/zrpcio/zrpc/acl"
	"github.com/zrpcio/zrpc/internal/warnrate"
)

// With ACLs on, the HTTP endpoint's /debug/pprof needs a token granting
// operator:read, sent as "Authorization: Bearer <secret>" and resolved by
// the resolver the gRPC interceptors use: profiles and the command line
// tell a caller much about the agent. The web UI's data (/ui/api/) needs
// what the gRPC method serving the same data needs (package ui checks
// it on the token authorizeHTTP resolves). /metrics, /healthz, /readyz
// and the UI's page and script stay open.

// requireOperatorRead wraps h so that, with ACLs on, only a caller whose
// token grants operator:read reaches it: no or an unknown token gets 401,
// a token without the permission 403 naming it.
func (n *Node) requireOperatorRead(h http.Handler) http.Handler {
	if n.aclResolver == nil {
		return h
	}
	// A refused token's lines a minute at most, per token: a dashboard
	// polling with the wrong token would write one per request.
	warn := warnrate.New(time.Minute, 1024, time.Now)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, accessor, ok := n.authorizeHTTP(w, r, "operator:read")
		if !ok {
			return
		}
		if err := a.Allow(acl.Operator, "", acl.Read); err != nil {
			if pass, held := warn.Seen(accessor); pass {
				n.log.Warn("ACL refused an HTTP request (logged once a minute per token and path)", "caller", "token "+accessor, "path", r.URL.Path, "held_back", held)
			}
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// authorizeHTTP resolves the token of an HTTP request (ACLs on) with the
// resolver the gRPC interceptors use. Without a token or with an unknown
// one it answers 401, saying that r's path needs a token granting need
// (e.g. "operator:read"), and returns false; else the token's authorizer
// and accessor id.
func (n *Node) authorizeHTTP(w http.ResponseWriter, r *http.Request, need string) (acl.Authorizer, string, bool) {
	secret, err := bearerHeader(r, need)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="zrpc"`)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return nil, "", false
	}
	a, accessor, err := n.aclResolver.Resolve(acl.HashSecret(secret))
	switch {
	case errors.Is(err, acl.ErrTokenNotFound):
		w.Header().Set("WWW-Authenticate", `Bearer realm="zrpc", error="invalid_token"`)
		http.Error(w, "ACL token not found: "+r.URL.Path+" needs a token with "+need, http.StatusUnauthorized)
		return nil, "", false
	case err != nil:
		n.log.Error("resolve ACL token for HTTP", "path", r.URL.Path, "err", err)
		http.Error(w, "resolve ACL token: internal error", http.StatusInternalServerError)
		return nil, "", false
	}
	return a, accessor, true
}

// bearerHeader returns the secret of the request's Authorization header;
// need names the permission the request needs, for the error.
func bearerHeader(r *http.Request, need string) (string, error) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 {
		return "", fmt.Errorf("ACLs are on: %s needs a token with %s (header \"Authorization: Bearer <secret>\")", r.URL.Path, need)
	}
	if len(vals) > 1 {
		return "", fmt.Errorf("the request carries %d Authorization headers, want one", len(vals))
	}
	scheme, secret, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(secret) == "" {
		return "", errors.New(`header Authorization is not "Bearer <secret>"`)
	}
	return strings.TrimSpace(secret), nil
}
