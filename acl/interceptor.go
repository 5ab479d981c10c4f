package acl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/internal/connlimit"
	"github.com/zrpcio/zrpc/internal/warnrate"
)

// AuthorizationKey is the gRPC metadata key that carries a token, as
// "Bearer <secret>".
const AuthorizationKey = "authorization"

// ErrTokenNotFound is what a Resolver returns for a secret no token has.
var ErrTokenNotFound = errors.New("token not found")

// Resolver finds the token whose secret hashes to hash (HashSecret) and
// returns its authorizer and its accessor id, or an error wrapping
// ErrTokenNotFound. It is called from gRPC handler goroutines,
// concurrently, once per call, and must not block on the network.
type Resolver interface {
	Resolve(hash [sha256.Size]byte) (a Authorizer, accessorID string, err error)
}

// InterceptorConfig is what the ACL interceptors need of the agent.
type InterceptorConfig struct {
	Resolver Resolver
	// AgentProof, when set, reports whether a call carries a valid proof
	// that its caller is an agent of the cluster (the cluster HMAC); such
	// a call is granted what AgentAuthorizer grants, and whatever the
	// token it also carries grants (an agent forwarding a client's call passes the
	// client's token on).
	AgentProof func(ctx context.Context, fullMethod string) bool
	// OnRefused, when set, counts each refused call (code Unauthenticated
	// or PermissionDenied). It is called on the call's goroutine and must
	// not block.
	OnRefused func(fullMethod string, code codes.Code)
	// Logger gets one line per caller and minute about refused calls
	// (a caller is a token, or for a call without a known token its host),
	// and one a minute for the refusals of callers past the 4,096 it
	// follows one by one; never a secret.
	Logger *slog.Logger
	// Now is the clock of the log's rate limit (time.Now when nil).
	Now func() time.Time
	// Changed, when set, returns a channel closed at the next change of
	// the tokens or policies (raftstore's FSM.ACLChanged). The streams
	// open with a token are then checked again at once, so that one that
	// sends nothing (an idle Watch) ends too when its token is deleted or
	// no longer grants it; without it such a stream learns at its next
	// message.
	Changed func() <-chan struct{}
}

// Interceptors enforce Methods on an agent's gRPC server: Unary and Stream
// go after panic recovery and before the handlers.
type Interceptors struct {
	cfg InterceptorConfig

	// refusals is each caller's refusal line (by caller.logKey), one a
	// minute, and the one line of the callers past maxLogged.
	refusals *warnrate.Limiter

	// openMu guards open and watching: the streams open with a token,
	// checked again at each change of the ACL state (Changed), and
	// whether a goroutine waits for that change (while any is open).
	openMu   sync.Mutex
	open     map[*authorizedStream]struct{}
	watching bool
	// idle is signalled when the last open stream ends.
	idle chan struct{}
}

// NewInterceptors returns the interceptors of cfg.
func NewInterceptors(cfg InterceptorConfig) *Interceptors {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Interceptors{cfg: cfg, refusals: warnrate.New(logEvery, maxLogged, cfg.Now),
		open: map[*authorizedStream]struct{}{}, idle: make(chan struct{}, 1)}
}

// logEvery is how often refusals of one caller are logged.
const logEvery = time.Minute

// maxLogged bounds the callers whose refusal lines are remembered.
const maxLogged = 4096

// Unary is the unary server interceptor.
func (i *Interceptors) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	perm, c, err := i.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, i.refuse(ctx, info.FullMethod, c, err)
	}
	if perm.Public {
		return h(ctx, req)
	}
	if err := check(c.a, perm, req, perm.Name == nil); err != nil {
		return nil, i.refuse(ctx, info.FullMethod, c, err)
	}
	resp, err := h(ctx, req)
	if err == nil && perm.Filter != nil {
		resp = perm.Filter(c.a, resp)
	}
	return resp, err
}

// Stream is the stream server interceptor. A stream is authorized
// against its token's current rights, not the rights it had when it
// opened: the token is resolved again for each message the client sends
// (a Session stream's registrations, a put's header, a keepalive) and,
// on a stream that serves data for as long as it lasts (a server
// stream's, or one whose responses are filtered: Watch, WatchMany, a
// blob get), for each message the handler sends. A token deleted
// meanwhile ends the stream with Unauthenticated; one that no longer
// grants the stream's permission, or a server stream's request (the
// service a Watch watches), ends it with PermissionDenied; a message the
// token may not send ends it with PermissionDenied. A client stream
// whose client has sent its whole request is, from then on, a unary call
// in flight: it is answered whatever becomes of its token.
func (i *Interceptors) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx := ss.Context()
	perm, c, err := i.authenticate(ctx, info.FullMethod)
	if err != nil {
		return i.refuse(ctx, info.FullMethod, c, err)
	}
	if perm.Public {
		return h(srv, ss)
	}
	if perm.Name == nil {
		if err := c.a.Allow(perm.Resource, "", perm.Access); err != nil {
			return i.refuse(ctx, info.FullMethod, c, err)
		}
	}
	as := &authorizedStream{ServerStream: ss, i: i, caller: c, perm: perm,
		holdsRequest: !info.IsClientStream, checksSends: !info.IsClientStream || perm.Filter != nil,
		oneResponse: info.IsClientStream && !info.IsServerStream}
	if c.token && i.cfg.Changed != nil {
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		as.cancel = cancel
		i.track(as)
		defer i.untrack(as)
		// A change between the authentication and the tracking has
		// fired no channel the tracking waits on.
		if _, err := as.authorizer(); err != nil {
			return i.refuse(ctx, info.FullMethod, c, err)
		}
	}
	as.ctx = context.WithValue(ctx, authorizerKey{}, as)
	err = h(srv, as)
	if denied := as.deniedErr(); denied != nil {
		return i.refuse(ctx, info.FullMethod, c, denied)
	}
	return err
}

// track adds s to the open streams checked again at each change of the
// ACL state, and starts the goroutine waiting for changes if none runs.
// The channel it waits on first is taken here, before s checks its token
// once more, so that no change between the two goes unseen.
func (i *Interceptors) track(s *authorizedStream) {
	i.openMu.Lock()
	defer i.openMu.Unlock()
	i.open[s] = struct{}{}
	if !i.watching {
		i.watching = true
		go i.watchChanges(i.cfg.Changed())
	}
}

// untrack removes s from the open streams.
func (i *Interceptors) untrack(s *authorizedStream) {
	i.openMu.Lock()
	defer i.openMu.Unlock()
	delete(i.open, s)
	if len(i.open) == 0 {
		select {
		case i.idle <- struct{}{}:
		default:
		}
	}
}

// watchChanges checks the open streams again at each change of the ACL
// state, from the change that closes ch, until none is open.
func (i *Interceptors) watchChanges(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
			ch = i.cfg.Changed() // before the checks: a change during them comes round again
			i.openMu.Lock()
			open := make([]*authorizedStream, 0, len(i.open))
			for s := range i.open {
				open = append(open, s)
			}
			i.openMu.Unlock()
			for _, s := range open {
				s.checkAgain()
			}
		case <-i.idle:
			i.openMu.Lock()
			if len(i.open) == 0 {
				i.watching = false
				i.openMu.Unlock()
				return
			}
			i.openMu.Unlock()
		}
	}
}

// check applies perm to one request message; once: the permission has no
// name and is checked once per call.
func check(a Authorizer, perm Permission, msg any, once bool) error {
	if once {
		return a.Allow(perm.Resource, "", perm.Access)
	}
	if perm.Name == nil {
		return nil
	}
	name, ok := perm.Name(msg)
	if !ok {
		return nil
	}
	return a.Allow(perm.Resource, name, perm.Access)
}

// authorizedStream checks what the client sends and filters what the
// handler sends, against the caller's current rights.
type authorizedStream struct {
	grpc.ServerStream
	i      *Interceptors
	ctx    context.Context // the stream's, carrying the stream (Allowed)
	caller caller          // as the stream opened
	perm   Permission
	// holdsRequest: the call is a server stream, whose one request (a
	// Watch's service) it needs for as long as it sends; checksSends:
	// each message sent is authorized too; oneResponse: the call is a
	// client stream, answered once its request is whole (a put, a
	// snapshot restore).
	holdsRequest, checksSends, oneResponse bool

	// mu guards held, denied and received: the handler's goroutines may
	// receive and send at once.
	mu sync.Mutex
	// held is the name a server stream's request was granted, checked
	// again before each message sent; holds: there is one.
	held  string
	holds bool
	// denied is the error that ends the stream: the first refused
	// message's, or the token's once it was deleted or narrowed.
	denied error
	// received: a oneResponse stream's client has sent its whole
	// request (closed its side), every message of it authorized. From
	// then on the call is a unary call in flight, which a change of the
	// ACL state does not end: the change may be the call's own doing (a
	// snapshot restore replaces the tokens, its caller's among them),
	// and its answer says what was done.
	received bool
	// cancel, when set, ends the handler's context: the token was
	// deleted or narrowed while the stream sent nothing (checkAgain).
	cancel context.CancelCauseFunc
}

// checkAgain checks the stream's token after a change of the ACL state
// and ends a stream it no longer authorizes.
func (s *authorizedStream) checkAgain() {
	s.mu.Lock()
	received := s.received
	s.mu.Unlock()
	if received {
		return
	}
	if _, err := s.authorizer(); err != nil {
		s.deny(err)
		s.cancel(err)
	}
}

// Context returns the stream's context, which carries the stream for
// the handler (Allowed).
func (s *authorizedStream) Context() context.Context { return s.ctx }

// authorizerKey is the context key of an authorizedStream.
type authorizerKey struct{}

// Allowed checks, in a stream handler, one request of a stream that
// carries many (a WatchMany stream's watches), so that the handler can
// refuse that request alone and go on serving the others: it returns nil
// when the caller of the stream whose context is ctx may, with its
// token's current rights, access the resource, else the permission
// error. The stream's permission in Methods leaves such requests
// unchecked (Name reports no check). An error wrapping
// apierr.ErrUnauthenticated means the stream's token was deleted: the
// stream is over, and the interceptor ends it with that error whatever
// the handler returns. A context without an authorizer is a server
// without ACLs (the interceptor puts one in every stream it checks):
// everything is allowed.
func Allowed(ctx context.Context, kind Resource, name string, access Access) error {
	s, ok := ctx.Value(authorizerKey{}).(*authorizedStream)
	if !ok {
		return nil
	}
	a, err := s.authorizer()
	if err != nil {
		s.deny(err)
		return err
	}
	return a.Allow(kind, name, access)
}

// Enforced reports whether the stream whose context is ctx is checked by
// ACLs: its responses are filtered (acl.Methods' Filter), so their
// events must name their services.
func Enforced(ctx context.Context) bool {
	_, ok := ctx.Value(authorizerKey{}).(*authorizedStream)
	return ok
}

// authorizer returns the caller's authorizer as its token's current
// rights make it, or the error that ends the stream: the token was
// deleted, or no longer grants the stream's permission or the request
// a server stream holds. The token is resolved again at each call: a
// resolver's answer for an unchanged token is a lookup of the token and
// its policies (NewReplicaResolver), what every unary call costs.
func (s *authorizedStream) authorizer() (Authorizer, error) {
	c := s.caller
	if !c.token {
		return c.a, nil // an agent's proof alone: there is no token to lose
	}
	a, _, err := s.i.resolve(c.hash, c.agent)
	switch {
	case errors.Is(err, ErrTokenNotFound):
		return nil, fmt.Errorf("%w: the stream's ACL token was deleted while it was open", apierr.ErrUnauthenticated)
	case err != nil:
		return nil, fmt.Errorf("resolve ACL token: %w", err)
	}
	if s.perm.Name == nil {
		if !a.Allows(s.perm.Resource, "", s.perm.Access) {
			return nil, revoked(s.perm.Resource, "", s.perm.Access)
		}
	}
	s.mu.Lock()
	held, holds := s.held, s.holds
	s.mu.Unlock()
	if holds && !a.Allows(s.perm.Resource, held, s.perm.Access) {
		return nil, revoked(s.perm.Resource, held, s.perm.Access)
	}
	return a, nil
}

// revoked is the error that ends a stream whose token lost a permission
// the stream needs.
func revoked(kind Resource, name string, need Access) error {
	return fmt.Errorf("%w: the stream's token no longer allows %s (its rights changed while the stream was open)",
		apierr.ErrPermissionDenied, permission(kind, name, need))
}

func (s *authorizedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		if err == io.EOF && s.oneResponse {
			s.mu.Lock()
			s.received = true
			s.mu.Unlock()
		}
		return err
	}
	a, err := s.authorizer()
	if err == nil {
		err = check(a, s.perm, m, false)
	}
	if err != nil {
		s.deny(err)
		return apierr.ToStatus(err)
	}
	if s.holdsRequest && s.perm.Name != nil {
		if name, ok := s.perm.Name(m); ok {
			s.mu.Lock()
			s.held, s.holds = name, true
			s.mu.Unlock()
		}
	}
	return nil
}

func (s *authorizedStream) SendMsg(m any) error {
	if !s.checksSends {
		return s.ServerStream.SendMsg(m)
	}
	a, err := s.authorizer()
	if err != nil {
		s.deny(err)
		return apierr.ToStatus(err)
	}
	if s.perm.Filter != nil {
		m = s.perm.Filter(a, m)
	}
	return s.ServerStream.SendMsg(m)
}

// deny records err as the stream's end, unless an earlier one is.
func (s *authorizedStream) deny(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.denied == nil {
		s.denied = err
	}
}

func (s *authorizedStream) deniedErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.denied
}

// caller is who makes a call, as authenticate found it.
type caller struct {
	a   Authorizer
	who string // names the caller in logs
	// logKey is who the refusal log counts the caller as: its token, or
	// for a call without a known token the kind of call and its host
	// (connlimit.Group), so that new secrets sprayed from one host take one
	// place in the log.
	logKey string
	// token: the call carries a token, whose secret hashes to hash;
	// agent: it carries an agent's proof too.
	token, agent bool
	hash         [sha256.Size]byte
}

// authenticate finds the method's permission and, unless it is public, the
// caller.
func (i *Interceptors) authenticate(ctx context.Context, method string) (perm Permission, c caller, err error) {
	perm, ok := Methods[method]
	if !ok {
		return perm, c, fmt.Errorf("%w: no ACL rule for method %s", apierr.ErrPermissionDenied, method)
	}
	if perm.Public {
		return perm, c, nil
	}
	c.agent = i.cfg.AgentProof != nil && i.cfg.AgentProof(ctx, method)
	if c.agent && len(metadata.ValueFromIncomingContext(ctx, AuthorizationKey)) == 0 {
		c.a, c.who, c.logKey = AgentAuthorizer(), "agent", "agent"
		return perm, c, nil
	}
	secret, err := bearer(ctx)
	if err != nil {
		c.who = "no token"
		c.logKey = "no token from " + remoteHost(ctx)
		return perm, c, err
	}
	c.token, c.hash = true, HashSecret(secret)
	c.a, c.who, err = i.resolve(c.hash, c.agent)
	c.logKey = c.who
	switch {
	case errors.Is(err, ErrTokenNotFound):
		c.who = "unknown token " + hex.EncodeToString(c.hash[:4])
		c.logKey = "unknown token from " + remoteHost(ctx)
		return perm, c, fmt.Errorf("%w: ACL token not found", apierr.ErrUnauthenticated)
	case err != nil:
		// Not the caller's doing (a stored policy this agent cannot
		// read, say): logged under the token, so that it is seen.
		c.who = "token " + hex.EncodeToString(c.hash[:4]) + " (its lookup failed)"
		c.logKey = c.who
		return perm, c, fmt.Errorf("resolve ACL token: %w", err)
	}
	return perm, c, nil
}

// remoteHost is the host a call comes from, an IPv6 /64 as one
// (connlimit.Group), or "" when the context has no peer.
func remoteHost(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return connlimit.Group(p.Addr)
	}
	return ""
}

// resolve finds the authorizer of the token whose secret hashes to hash
// and who names its caller in logs; agent: the call carries an agent's
// proof too. The error wraps ErrTokenNotFound when no token has hash
// (and the call carries no agent's proof).
func (i *Interceptors) resolve(hash [sha256.Size]byte, agent bool) (a Authorizer, who string, err error) {
	a, accessor, err := i.cfg.Resolver.Resolve(hash)
	switch {
	case agent && errors.Is(err, ErrTokenNotFound):
		// An agent forwarding a call whose token this replica does not
		// know (a public call's, or one deleted meanwhile) acts as itself.
		return AgentAuthorizer(), "agent", nil
	case err != nil:
		return nil, "", err
	case agent:
		return anyOf{AgentAuthorizer(), a}, "agent for token " + accessor, nil
	}
	return a, "token " + accessor, nil
}

// bearer returns the secret of the call's "authorization: Bearer" metadata.
func bearer(ctx context.Context) (string, error) {
	vals := metadata.ValueFromIncomingContext(ctx, AuthorizationKey)
	if len(vals) == 0 {
		return "", fmt.Errorf("%w: ACLs are on and the call carries no token (metadata %q: \"Bearer <secret>\")", apierr.ErrUnauthenticated, AuthorizationKey)
	}
	if len(vals) > 1 {
		return "", fmt.Errorf("%w: the call carries %d tokens, want one", apierr.ErrUnauthenticated, len(vals))
	}
	scheme, secret, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(secret) == "" {
		return "", fmt.Errorf("%w: metadata %q is not \"Bearer <secret>\"", apierr.ErrUnauthenticated, AuthorizationKey)
	}
	return strings.TrimSpace(secret), nil
}

// refuse counts and logs a refused call and returns its status.
func (i *Interceptors) refuse(ctx context.Context, method string, c caller, err error) error {
	st := apierr.ToStatus(err)
	code := status.Code(st)
	if i.cfg.OnRefused != nil && (code == codes.Unauthenticated || code == codes.PermissionDenied) {
		i.cfg.OnRefused(method, code)
	}
	if c.who == "" {
		return st
	}
	line := i.refusals.Note(c.logKey)
	if !line.Pass {
		return st
	}
	attrs := []slog.Attr{slog.String("caller", c.who)}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, slog.String("from", connlimit.Host(p.Addr)))
	}
	attrs = append(attrs, slog.String("method", method), slog.String("error", err.Error()))
	if !line.Shared {
		i.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "ACL refused a call (logged once a minute per caller)",
			append(attrs, slog.Int("held_back", line.Held))...)
	} else {
		i.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, fmt.Sprintf("ACL refused calls of more callers than the %d it logs one by one (logged together once a minute; the last one's call follows)", maxLogged),
			append([]slog.Attr{slog.Int("refused", line.Held+1), slog.Int("callers", line.Senders)}, attrs...)...)
	}
	return st
}
