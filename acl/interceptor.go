package acl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
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
	// Logger gets one line per token and minute about refused calls; never
	// a secret.
	Logger *slog.Logger
	// Now is the clock of the log's rate limit (time.Now when nil).
	Now func() time.Time
}

// Interceptors enforce Methods on an agent's gRPC server: Unary and Stream
// go after panic recovery and before the handlers.
type Interceptors struct {
	cfg InterceptorConfig

	mu sync.Mutex
	// logged is when each token (by accessor id, or a short hash of an
	// unknown secret) was last logged.
	logged map[string]time.Time
}

// NewInterceptors returns the interceptors of cfg.
func NewInterceptors(cfg InterceptorConfig) *Interceptors {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Interceptors{cfg: cfg, logged: map[string]time.Time{}}
}

// logEvery is how often refusals of one token are logged.
const logEvery = time.Minute

// maxLogged bounds the tokens whose last log time is remembered.
const maxLogged = 4096

// Unary is the unary server interceptor.
func (i *Interceptors) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	perm, a, who, err := i.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, i.refuse(ctx, info.FullMethod, who, err)
	}
	if perm.Public {
		return h(ctx, req)
	}
	if err := check(a, perm, req, perm.Name == nil); err != nil {
		return nil, i.refuse(ctx, info.FullMethod, who, err)
	}
	resp, err := h(ctx, req)
	if err == nil && perm.Filter != nil {
		resp = perm.Filter(a, resp)
	}
	return resp, err
}

// Stream is the stream server interceptor. Each message the client sends
// is checked (a Session stream's registrations, a put's header); a refused
// one ends the stream with PermissionDenied.
func (i *Interceptors) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx := ss.Context()
	perm, a, who, err := i.authenticate(ctx, info.FullMethod)
	if err != nil {
		return i.refuse(ctx, info.FullMethod, who, err)
	}
	if perm.Public {
		return h(srv, ss)
	}
	if perm.Name == nil {
		if err := a.Allow(perm.Resource, "", perm.Access); err != nil {
			return i.refuse(ctx, info.FullMethod, who, err)
		}
	}
	as := &authorizedStream{ServerStream: ss, ctx: context.WithValue(ctx, authorizerKey{}, a), a: a, perm: perm}
	err = h(srv, as)
	if denied := as.deniedErr(); denied != nil {
		return i.refuse(ctx, info.FullMethod, who, denied)
	}
	return err
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
// handler sends.
type authorizedStream struct {
	grpc.ServerStream
	ctx  context.Context // the stream's, carrying a (Allowed)
	a    Authorizer
	perm Permission
	// denied is the first refused message's error, set by whichever of
	// the handler's goroutines receives.
	mu     sync.Mutex
	denied error
}

// Context returns the stream's context, which carries the caller's
// authorizer for the handler (Allowed).
func (s *authorizedStream) Context() context.Context { return s.ctx }

// authorizerKey is the context key of a stream caller's authorizer.
type authorizerKey struct{}

// Allowed checks, in a stream handler, one request of a stream that
// carries many (a WatchMany stream's watches), so that the handler can
// refuse that request alone and go on serving the others: it returns nil
// when the caller of the stream whose context is ctx may access the
// resource, else the permission error. The stream's permission in Methods
// leaves such requests unchecked (Name reports no check). A context
// without an authorizer is a server without ACLs (the interceptor puts
// one in every stream it checks): everything is allowed.
func Allowed(ctx context.Context, kind Resource, name string, access Access) error {
	a, ok := streamAuthorizer(ctx)
	if !ok {
		return nil
	}
	return a.Allow(kind, name, access)
}

// streamAuthorizer returns the authorizer the interceptor put in a
// stream's context, ok false when there is none.
func streamAuthorizer(ctx context.Context) (a Authorizer, ok bool) {
	a, ok = ctx.Value(authorizerKey{}).(Authorizer)
	return a, ok
}

// Enforced reports whether the stream whose context is ctx is checked by
// ACLs: its responses are filtered (acl.Methods' Filter), so their
// events must name their services.
func Enforced(ctx context.Context) bool {
	_, ok := streamAuthorizer(ctx)
	return ok
}

func (s *authorizedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if err := check(s.a, s.perm, m, false); err != nil {
		s.mu.Lock()
		if s.denied == nil {
			s.denied = err
		}
		s.mu.Unlock()
		return apierr.ToStatus(err)
	}
	return nil
}

func (s *authorizedStream) SendMsg(m any) error {
	if s.perm.Filter != nil {
		m = s.perm.Filter(s.a, m)
	}
	return s.ServerStream.SendMsg(m)
}

func (s *authorizedStream) deniedErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.denied
}

// authenticate finds the method's permission and, unless it is public, the
// caller's authorizer; who names the caller in logs.
func (i *Interceptors) authenticate(ctx context.Context, method string) (perm Permission, a Authorizer, who string, err error) {
	perm, ok := Methods[method]
	if !ok {
		return perm, nil, "", fmt.Errorf("%w: no ACL rule for method %s", apierr.ErrPermissionDenied, method)
	}
	if perm.Public {
		return perm, nil, "", nil
	}
	agent := i.cfg.AgentProof != nil && i.cfg.AgentProof(ctx, method)
	if agent && len(metadata.ValueFromIncomingContext(ctx, AuthorizationKey)) == 0 {
		return perm, AgentAuthorizer(), "agent", nil
	}
	secret, err := bearer(ctx)
	if err != nil {
		return perm, nil, "no token", err
	}
	hash := HashSecret(secret)
	a, accessor, err := i.cfg.Resolver.Resolve(hash)
	switch {
	case agent && errors.Is(err, ErrTokenNotFound):
		// An agent forwarding a call whose token this replica does not
		// know (a public call's, or one deleted meanwhile) acts as itself.
		return perm, AgentAuthorizer(), "agent", nil
	case errors.Is(err, ErrTokenNotFound):
		return perm, nil, "unknown token " + hex.EncodeToString(hash[:4]),
			fmt.Errorf("%w: ACL token not found", apierr.ErrUnauthenticated)
	case err != nil:
		return perm, nil, "", fmt.Errorf("resolve ACL token: %w", err)
	}
	if agent {
		return perm, anyOf{AgentAuthorizer(), a}, "agent for token " + accessor, nil
	}
	return perm, a, "token " + accessor, nil
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
func (i *Interceptors) refuse(ctx context.Context, method, who string, err error) error {
	st := apierr.ToStatus(err)
	code := status.Code(st)
	if i.cfg.OnRefused != nil && (code == codes.Unauthenticated || code == codes.PermissionDenied) {
		i.cfg.OnRefused(method, code)
	}
	if who != "" && i.shouldLog(who) {
		i.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "ACL refused a call (logged once a minute per token)",
			slog.String("caller", who), slog.String("method", method), slog.String("error", err.Error()))
	}
	return st
}

// shouldLog reports whether who's refusals were not logged in the last
// minute, and records this one.
func (i *Interceptors) shouldLog(who string) bool {
	now := i.cfg.Now()
	i.mu.Lock()
	defer i.mu.Unlock()
	if last, ok := i.logged[who]; ok && now.Sub(last) < logEvery {
		return false
	}
	if len(i.logged) >= maxLogged {
		for k, t := range i.logged {
			if now.Sub(t) >= logEvery {
				delete(i.logged, k)
			}
		}
		if len(i.logged) >= maxLogged {
			return false
		}
	}
	i.logged[who] = now
	return true
}
