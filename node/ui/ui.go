// Package ui is the agent's web UI at /ui/: a page embedded in the binary
// (plain HTML, CSS and JavaScript, no build step and nothing fetched from
// elsewhere) and the JSON endpoints and live-update stream it reads.
//
// The endpoints read the local agent's own state through the interfaces
// the gRPC API uses (the registry replica, the Status service, the blob
// store): no call goes through the agent's gRPC port. With ACLs on, each
// endpoint needs the permission of the gRPC method whose data it shows
// (acl.Methods), checked or filtered the same way; the token comes as
// "Authorization: Bearer <secret>", which the page sends with every
// request, the live stream included.
//
// It is not an API for programs: the JSON shapes follow the page and may
// change with it. Programs use the gRPC API (package client).
package ui

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/acl"
	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/warnrate"
	"github.com/zrpcio/zrpc/raftstore"
)

// Prefix is the path the UI is served under.
const Prefix = "/ui/"

//go:embed assets
var assets embed.FS

// Replica is the agent's registry replica (raftstore's FSM) as the UI
// reads it. Its methods are called from HTTP handlers, concurrently.
type Replica interface {
	Revision() uint64
	Services() ([]*pb.ServiceSummary, uint64)
	// EncodedInstances returns the instances of service in id order,
	// undecoded (the UI decodes only those of the page it answers), and
	// the revision they are at.
	EncodedInstances(service string) ([]raftstore.EncodedInstance, uint64)
	Blob(name string) *pb.Blob
	// Watch returns a watcher of service (every service when empty) from
	// revision from; the caller closes it.
	Watch(service string, from uint64) *raftstore.Watcher
}

// Status is the agent's Status service (grpcapi.Status), called in
// process: its answers are the ones `zrpcctl status`, `members` and
// `raft peers` show.
type Status interface {
	Status(ctx context.Context, req *pb.StatusRequest) (*pb.StatusResponse, error)
	Members(ctx context.Context, req *pb.MembersRequest) (*pb.MembersResponse, error)
	Peers(ctx context.Context, req *pb.PeersRequest) (*pb.PeersResponse, error)
}

// Blobs is the agent's blob store (package storage) as the UI reads it.
type Blobs interface {
	// ListPage summarises the first limit of the blobs under prefix after
	// the name after that keep accepts, in name order, judging the health
	// of those only; total counts all those under prefix keep accepts. It
	// asks keep about every blob under prefix once, in name order.
	ListPage(ctx context.Context, prefix, after string, limit int, keep func(name string) bool, c pb.Consistency) (
		page []*pb.BlobSummary, total int, rev uint64, err error)
	// LeaderRepairStatus asks the leader for its repair's state and, with
	// a blob id, that blob's shards reported corrupt.
	LeaderRepairStatus(ctx context.Context, blobID string) (*pb.RepairStatusResponse, error)
}

// Authorize resolves the token of r. It returns the token's authorizer,
// or false after writing the refusal (401: no token or an unknown one) to
// w. need names the permission the request needs, for that message (e.g.
// "service:read").
type Authorize func(w http.ResponseWriter, r *http.Request, need string) (acl.Authorizer, bool)

// Config is what the UI needs of its agent.
type Config struct {
	Replica Replica
	Status  Status
	Blobs   Blobs
	// Authorize is nil with ACLs off: every request may read everything.
	Authorize Authorize
	// ValidService checks the service name of /ui/api/services/{name}
	// as the gRPC API does; a name it refuses is answered 400 with its
	// error. Nil takes every name.
	ValidService func(name string) error
	// KeepAlive is how long a live stream may stay silent before a
	// comment is sent (a connection that went away without closing, on
	// a dropped network, is found when a write to it fails); 0: 25 s.
	KeepAlive time.Duration
	// WriteTimeout bounds each write to a live stream: a reader that
	// stopped reading has its stream ended; 0: 10 s.
	WriteTimeout time.Duration
	// TakeWatch, when set, holds one of the agent's Watch stream slots
	// (max_watches) for a live stream until release is called; a live
	// stream it refuses is answered 503 with its error.
	TakeWatch func() (release func(), err error)
	// MaxStreams bounds the live streams served at once; more are
	// answered 503. Each holds a connection, a goroutine and a watch
	// slot, which the registry's own Watch streams need; 0: 256.
	MaxStreams int
	Logger     *slog.Logger
}

// UI serves the web UI of one agent. Close ends its live streams.
type UI struct {
	cfg    Config
	log    *slog.Logger
	mux    *http.ServeMux
	static http.Handler
	// refusals spaces out the log lines of refused requests: an open page
	// whose token lacks a permission asks again every few seconds.
	refusals *warnrate.Limiter

	// ctx ends on Close; live streams end with it and streams waits for
	// them.
	ctx     context.Context
	cancel  context.CancelFunc
	mu      sync.Mutex
	closed  bool
	open    int // live streams being served
	streams sync.WaitGroup
}

// New returns the UI of an agent; mount it at Prefix.
func New(cfg Config) *UI {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = defaultKeepAlive
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = defaultWriteTimeout
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = defaultMaxStreams
	}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is part of the build
	}
	u := &UI{cfg: cfg, log: log, mux: http.NewServeMux(), static: http.FileServerFS(sub),
		refusals: warnrate.New(time.Minute, refusalSenders, time.Now)}
	u.ctx, u.cancel = context.WithCancel(context.Background())
	u.mux.HandleFunc("GET /ui/api/agent", u.serveAgent)
	u.mux.HandleFunc("GET /ui/api/services", u.serveServices)
	u.mux.HandleFunc("GET /ui/api/services/{name}", u.serveService)
	u.mux.HandleFunc("GET /ui/api/members", u.serveMembers)
	u.mux.HandleFunc("GET /ui/api/raft", u.serveRaft)
	u.mux.HandleFunc("GET /ui/api/blobs", u.serveBlobs)
	u.mux.HandleFunc("GET /ui/api/repair", u.serveRepair)
	u.mux.HandleFunc("GET /ui/api/events", u.serveEvents)
	u.mux.HandleFunc("GET /ui/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no UI endpoint "+r.URL.Path)
	})
	u.mux.HandleFunc("GET /ui/static/", u.serveStatic)
	// Every other path under /ui/ is a page of the single page app.
	u.mux.HandleFunc("GET /ui/", u.servePage)
	return u
}

// ServeHTTP serves the UI, every answer with headers that keep a browser
// from running anything but the UI's own files in it.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "the UI serves only GET and HEAD")
		return
	}
	u.mux.ServeHTTP(w, r)
}

// Close ends the live streams and waits for their handlers. Requests for
// a stream after Close are refused; the other endpoints keep answering.
// Safe to call twice.
func (u *UI) Close() {
	u.mu.Lock()
	u.closed = true
	u.mu.Unlock()
	u.cancel()
	u.streams.Wait()
}

// servePage answers every page of the app with index.html; the script
// reads the path.
func (u *UI) servePage(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/ui/api") {
		writeError(w, http.StatusNotFound, "no UI endpoint "+r.URL.Path)
		return
	}
	index, err := assets.ReadFile("assets/index.html")
	if err != nil {
		panic(err) // embedded at build time
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(index)
}

func (u *UI) serveStatic(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/ui/static/")
	if name == "" || name == "index.html" || strings.Contains(name, "/") {
		writeError(w, http.StatusNotFound, "no UI file "+r.URL.Path)
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + name
	u.static.ServeHTTP(w, r2)
}

// allow checks that r's token has the permission of the gRPC method
// whose data the endpoint shows, as the ACL interceptors check that
// method's request req. It returns the token's authorizer (for filtering
// lists), or false after writing the refusal.
func (u *UI) allow(w http.ResponseWriter, r *http.Request, method string, req any) (acl.Authorizer, bool) {
	if u.cfg.Authorize == nil {
		return acl.Management(), true
	}
	perm, ok := acl.Methods[method]
	if !ok {
		writeError(w, http.StatusForbidden, "no permission is defined for "+method)
		return nil, false
	}
	a, ok := u.cfg.Authorize(w, r, perm.Resource.String()+":"+perm.Access.String())
	if !ok {
		return nil, false
	}
	name, check := "", true
	if perm.Name != nil {
		name, check = perm.Name(req)
	}
	if check {
		if err := a.Allow(perm.Resource, name, perm.Access); err != nil {
			if pass, held := u.refusals.Seen(remoteHost(r) + " " + r.URL.Path); pass {
				u.log.Warn("ACL refused a UI request (logged once a minute per client and path)",
					"from", remoteHost(r), "path", r.URL.Path, "err", err, "held_back", held)
			}
			writeError(w, http.StatusForbidden, err.Error())
			return nil, false
		}
	}
	return a, true
}

// refusalSenders bounds the clients and paths whose refusals the log
// follows one by one; past it they share one line a minute.
const refusalSenders = 1024

// remoteHost is the host r comes from.
func remoteHost(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// filter removes from resp, a response of method, what a may not read.
func filter(a acl.Authorizer, method string, resp any) any {
	if f := acl.Methods[method].Filter; f != nil {
		return f(a, resp)
	}
	return resp
}

// writeJSON answers v as JSON that no one caches. encoding/json writes
// <, > and & as \u escapes, so no answer is ever read as markup.
func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		return // the client went away
	}
}

// errorBody is the JSON of every refusal and failure.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(errorBody{Error: msg})
}

// writeAPIError answers an error of the agent's internal API with the
// HTTP status matching its gRPC code.
func (u *UI) writeAPIError(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	switch status.Code(apierr.ToStatus(err)) {
	case codes.InvalidArgument:
		code = http.StatusBadRequest
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.PermissionDenied:
		code = http.StatusForbidden
	case codes.Unauthenticated:
		code = http.StatusUnauthorized
	case codes.Unavailable, codes.Aborted:
		code = http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		code = http.StatusGatewayTimeout
	case codes.Canceled:
		if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
			return // the client went away
		}
	}
	if code == http.StatusInternalServerError {
		u.log.Error("UI request failed", "path", r.URL.Path, "err", err)
	}
	writeError(w, code, err.Error())
}
