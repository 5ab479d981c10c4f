package rpc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/rpc/resolver"
	"github.com/zrpcio/zrpc/rpc/serverchain"
)

// Server is a gRPC server that registers itself with a zrpc agent for as
// long as it runs. It serves grpc.health.v1 and reflection, so grpcurl works
// against it.
//
// Registration is session-bound: if the process dies, the agent removes the
// instance at once. If the agent restarts, the session breaks, or the
// cluster removes the session (the leader reaped the agent while it was
// unreachable, and the agent ends the stream once it is back), the server
// opens a new session and registers again, with backoff.
type Server struct {
	cfg    ServerConfig
	log    *slog.Logger
	grpc   *grpc.Server
	health *health.Server
	tls    *serverTLS // nil without TLS

	tel     *telemetry     // nil without a Telemetry section
	metrics *metricsServer // nil without a Prometheus section
	logFile io.Closer      // the Log section's output; nil with WithServerLogger

	ln     net.Listener
	agents *client.Client
	inst   *pb.Instance

	ctx    context.Context // ends when Stop begins
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	session   *client.Session
	startDone chan struct{} // made when Start begins, closed when it returns
	stopped   bool
	serveErr  error // why serving ended before Stop (the listener failed)

	done     chan struct{} // closed once the server no longer serves
	doneOnce sync.Once
}

// ServerOption changes how NewServer builds a Server.
type ServerOption func(*serverOptions)

type serverOptions struct {
	logger     *slog.Logger
	grpcOpts   []grpc.ServerOption
	registerer prometheus.Registerer
	verifier   func(ctx context.Context, token string) error
	traced     bool // WithServerTracing was given
}

// WithRegisterer sets where the server's metrics are registered (default
// prometheus.DefaultRegisterer).
func WithRegisterer(r prometheus.Registerer) ServerOption {
	return func(o *serverOptions) { o.registerer = r }
}

// WithTokenVerifier checks bearer tokens with verify instead of the
// static Tokens of the config.
func WithTokenVerifier(verify func(ctx context.Context, token string) error) ServerOption {
	return func(o *serverOptions) { o.verifier = verify }
}

// streamWorkers is how many goroutines a server keeps to run calls on. A
// worker keeps the stack a call grew (grpc-go's read of a request grows a
// new goroutine's stack: a tenth of a unary echo's CPU went to copying
// stacks with a goroutine per call), so a call starts on a grown stack.
// Calls past them, and long streams that keep a worker, get a goroutine
// each, as without workers. Idle workers cost a parked goroutine each.
const streamWorkers = 64

// WithServerLogger sets the logger (default: the config's Log section,
// else discard).
func WithServerLogger(l *slog.Logger) ServerOption {
	return func(o *serverOptions) { o.logger = l }
}

// serverKeepalive lets clients ping as often as every 5 s, with or
// without calls in flight: Dial's connections ping after 10 s without a
// word while calls wait (clientKeepalive), and grpc's default (one ping
// in 5 minutes) would end them with "too many pings".
var serverKeepalive = keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}

// WithGRPCOptions passes options to grpc.NewServer (interceptors, limits).
func WithGRPCOptions(opts ...grpc.ServerOption) ServerOption {
	return func(o *serverOptions) { o.grpcOpts = append(o.grpcOpts, opts...) }
}

// NewServer validates cfg and builds the server; it does no I/O but open
// the Log section's output file. Register services on GRPC() before Start.
func NewServer(cfg ServerConfig, opts ...ServerOption) (*Server, error) {
	d := DefaultServerConfig()
	if cfg.Weight == 0 {
		cfg.Weight = d.Weight
	}
	if cfg.DrainDelay == 0 {
		cfg.DrainDelay = d.DrainDelay
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = d.StopTimeout
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid rpc server config:\n%w", err)
	}
	var o serverOptions
	for _, opt := range opts {
		opt(&o)
	}
	var logFile io.Closer
	switch {
	case o.logger != nil:
	case cfg.Log.Enabled():
		l, f, err := cfg.Log.NewLogger()
		if err != nil {
			return nil, fmt.Errorf("invalid rpc server config: %w", err)
		}
		o.logger, logFile = l, f
	default:
		o.logger = slog.New(slog.DiscardHandler)
	}
	s, err := newServer(cfg, o)
	if err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("invalid rpc server config: %w", err)
	}
	s.logFile = logFile
	return s, nil
}

// newServer builds the Server of a valid cfg with o's logger.
func newServer(cfg ServerConfig, o serverOptions) (*Server, error) {
	tlsState, tlsOpts, err := newServerTLS(cfg.TLS, o.logger)
	if err != nil {
		return nil, err
	}
	var metrics *metricsServer
	if cfg.Prometheus.Enabled() {
		g, err := gathererOf(o.registerer)
		if err != nil {
			return nil, err
		}
		metrics = newMetricsServer(cfg.Prometheus, g, o.logger)
	}
	var tel *telemetry
	if cfg.Telemetry.Enabled() {
		if o.traced {
			return nil, errors.New("setting Telemetry: set together with WithServerTracing; use one of them")
		}
		// Last to fail: the provider's batcher runs until Stop.
		tel = newTelemetry(cfg.Telemetry, cfg.Name, o.logger)
		tlsOpts = append(tlsOpts, grpc.StatsHandler(newServerStatsHandler(tel.provider)))
	}
	gopts := append(append([]grpc.ServerOption{grpc.NumStreamWorkers(streamWorkers), grpc.KeepaliveEnforcementPolicy(serverKeepalive)}, tlsOpts...), o.grpcOpts...)
	if !cfg.NoChain {
		unary, stream := serverchain.Chain(chainConfig(cfg, o))
		gopts = append([]grpc.ServerOption{grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream)}, gopts...)
	}
	s := &Server{cfg: cfg, log: o.logger, grpc: grpc.NewServer(gopts...), health: health.NewServer(), tls: tlsState, tel: tel, metrics: metrics,
		done: make(chan struct{})}
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

func chainConfig(cfg ServerConfig, o serverOptions) serverchain.Config {
	c := serverchain.DefaultConfig()
	c.Logger = o.logger
	if o.registerer != nil {
		c.Registerer = o.registerer
	}
	if cfg.SlowThreshold != 0 {
		c.SlowThreshold = cfg.SlowThreshold
	}
	switch {
	case cfg.Timeout > 0:
		c.Timeout = cfg.Timeout
	case cfg.Timeout < 0:
		c.Timeout = 0
	}
	c.Tokens, c.Verifier = cfg.Tokens, o.verifier
	c.RateLimit, c.RateBurst = cfg.RateLimit, cfg.RateBurst
	c.Shedding, c.MaxInFlight = !cfg.NoShedding, cfg.MaxInFlight
	return c
}

// GRPC is the underlying server, for registering services.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Addr is the address clients dial (valid after Start).
func (s *Server) Addr() string {
	if s.inst == nil {
		return ""
	}
	return s.inst.Address
}

// Logger is the server's logger: WithServerLogger's, the Log section's,
// or one that discards.
func (s *Server) Logger() *slog.Logger { return s.log }

// MetricsAddr is the address the Prometheus section serves metrics on
// (valid after Start; empty without the section).
func (s *Server) MetricsAddr() string {
	if s.metrics == nil || s.metrics.ln == nil {
		return ""
	}
	return s.metrics.ln.Addr().String()
}

// Start listens, serves, and registers the instance through a session with
// the agent. It returns once the instance is registered (or, with
// NoRegister, once listening). While no agent can take the registration
// (none answers yet, as when the service starts before or with zrpcd, or
// the cluster has no leader yet) it tries again with backoff, logging
// each failure, until ctx ends; an answer that trying again cannot change
// (the token is refused, the instance is invalid) fails it at once. A
// Server starts once: Start again, or after Stop, returns an error (build
// another Server with NewServer); a failed Start stops serving and
// exporting, and Stop then closes the rest. Stop, called while Start
// registers, ends the registration and waits for Start to return.
func (s *Server) Start(ctx context.Context) error {
	if err := s.beginStart(); err != nil {
		return err
	}
	defer close(s.startDone)
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer context.AfterFunc(s.ctx, func() { cancel(errStopping) })()
	if err := s.start(sctx); err != nil {
		s.wg.Wait() // serving, which start stopped
		s.closeDone()
		if s.tel != nil {
			s.tel.shutdown(ctx)
		}
		if serr := s.Err(); serr != nil {
			return fmt.Errorf("start rpc server: %w", serr) // what ended the registration
		}
		return err
	}
	return nil
}

// Done is closed once the server no longer serves: Stop stopped it, a
// Start failed, or its listener failed while the process runs on (Err
// then says why, and the instance was deregistered). A service's main
// waits on it beside its signals, then calls Stop.
func (s *Server) Done() <-chan struct{} { return s.done }

func (s *Server) closeDone() { s.doneOnce.Do(func() { close(s.done) }) }

// Err is why the server stopped serving on its own (its listener
// failed); nil while it serves, and after a Stop that stopped it.
func (s *Server) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serveErr
}

// beginStart marks the server started, or says why it cannot start.
func (s *Server) beginStart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
		return errors.New("start rpc server: the server was stopped; a Server starts once, build another with NewServer")
	case s.startDone != nil:
		return errors.New("start rpc server: Start was called before; a Server starts once (after a failed Start, Stop it and build another with NewServer)")
	}
	s.startDone = make(chan struct{})
	return nil
}

// start is Start's work: on failure it releases what it had started.
func (s *Server) start(ctx context.Context) error {
	if err := s.tls.load(); err != nil {
		return err
	}
	if s.tel != nil {
		if err := s.tel.open(ctx); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", s.cfg.ListenOn)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.ListenOn, err)
	}
	if s.metrics != nil {
		if err := s.metrics.start(s.log); err != nil {
			ln.Close()
			return err
		}
	}
	s.ln = ln
	s.inst = s.instance(ln.Addr().(*net.TCPAddr))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.closeDone()
		if err := s.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.serveFailed(fmt.Errorf("serve on %s: %w", ln.Addr(), err))
		}
	}()
	if s.cfg.NoRegister {
		return nil
	}
	token, err := s.cfg.AgentToken.Resolve()
	if err == nil {
		s.agents, err = client.New(client.Config{Endpoints: s.cfg.agents(), Logger: s.log, Token: token, TLS: s.tls.agents()})
	}
	if err != nil {
		s.grpc.Stop()
		s.metrics.stop(ctx)
		return err
	}
	if err := s.registerAtStart(ctx); err != nil {
		s.grpc.Stop()
		s.metrics.stop(ctx)
		s.agents.Close()
		return err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.keepRegistered()
	}()
	s.log.Info("rpc server started", "service", s.inst.Service, "id", s.inst.Id, "addr", s.inst.Address)
	return nil
}

func (s *Server) instance(a *net.TCPAddr) *pb.Instance {
	addr := s.cfg.Advertise
	if addr == "" {
		host := a.IP.String()
		if a.IP.IsUnspecified() {
			host = "127.0.0.1"
		}
		addr = net.JoinHostPort(host, strconv.Itoa(a.Port))
	}
	id := s.cfg.ID
	if id == "" {
		h, _ := os.Hostname()
		id = fmt.Sprintf("%s-%d", h, a.Port)
	}
	inst := &pb.Instance{
		Service: s.cfg.Name, Id: id, Address: addr, Weight: s.cfg.Weight,
		Zone: s.cfg.Zone, Version: s.cfg.Version, Tags: s.cfg.Tags, Metadata: s.cfg.Meta,
	}
	if s.cfg.CheckInterval > 0 {
		// The agent checks this server's health endpoint, over mutual TLS
		// when the server serves TLS.
		inst.Check = &pb.Check{Grpc: true, Interval: durationpb.New(s.cfg.CheckInterval), GrpcTls: s.tls != nil}
	}
	return inst
}

// Health is the server's grpc.health.v1 service: set a status on it
// (NOT_SERVING when the service cannot serve) and, with CheckInterval,
// the agent's check marks the instance critical or passing accordingly.
func (s *Server) Health() *health.Server { return s.health }

// errStopping: a registration finished after Stop began, or after
// serving failed.
var errStopping = errors.New("the server is stopping")

// registerAttemptTimeout bounds one registration attempt: an agent that
// takes the connection and does not answer is tried again.
const registerAttemptTimeout = 5 * time.Second

// registerAtStart registers the instance for Start: after a failure that
// trying again may mend (registerRetryable) it logs what went wrong and
// tries again after registerBackoff, until ctx ends; any other failure
// ends it at once.
func (s *Server) registerAtStart(ctx context.Context) error {
	var last error // the last attempt's failure not caused by ctx ending
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, registerAttemptTimeout)
		err := s.register(actx)
		cancel()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errStopping):
			return fmt.Errorf("register %s/%s: %w", s.inst.Service, s.inst.Id, err)
		case ctx.Err() != nil:
			return s.registerGaveUp(ctx, attempt, cmp.Or(last, err))
		case !registerRetryable(err):
			return s.registerFailed(err)
		}
		last = err
		wait := registerBackoff(attempt - 1)
		s.log.Warn("register with the agent failed; retrying until Start's context ends",
			"service", s.inst.Service, "id", s.inst.Id, "attempt", attempt, "err", s.registerFailed(err), "retry_in", wait)
		select {
		case <-ctx.Done():
			return s.registerGaveUp(ctx, attempt, last)
		case <-time.After(wait):
		}
	}
}

// registerRetryable reports whether a registration that failed with err
// may succeed when tried again: no agent answered, or the one that did
// cannot take it yet (Unavailable: not running, starting, no Raft
// leader, shutting down), an attempt went unanswered, its outcome was
// unknown, or the agent's session slots were all held. Answers about the
// token or the instance (Unauthenticated, PermissionDenied,
// InvalidArgument, ...) do not change by trying again.
func registerRetryable(err error) bool {
	switch {
	case status.Code(err) == codes.Unavailable, status.Code(err) == codes.DeadlineExceeded,
		errors.Is(err, context.DeadlineExceeded):
		return true
	}
	return errors.Is(err, apierr.ErrOutcomeUnknown) || errors.Is(err, apierr.ErrQuotaExceeded)
}

// registerFailed is Start's error for a failed registration: it names
// the instance and the agents, and when nothing answered, how to start an
// agent.
func (s *Server) registerFailed(err error) error {
	if status.Code(err) == codes.Unavailable {
		// Nothing answered: most likely no agent runs there.
		return fmt.Errorf("register %s/%s: %w (is zrpcd running at %s? `zrpcd agent --dev` starts one; the Agents setting or $%s names others)",
			s.inst.Service, s.inst.Id, err, strings.Join(s.cfg.agents(), ","), resolver.AgentsEnv)
	}
	return fmt.Errorf("register %s/%s with agent %v: %w", s.inst.Service, s.inst.Id, s.cfg.agents(), err)
}

// registerGaveUp is Start's error when its context ended while it
// registered: why it ended, and the last attempt's failure.
func (s *Server) registerGaveUp(ctx context.Context, attempts int, last error) error {
	return fmt.Errorf("gave up after %d attempts as Start's context ended (%w); the last one: %w",
		attempts, context.Cause(ctx), s.registerFailed(last))
}

// register opens a session and registers the instance on it.
func (s *Server) register(ctx context.Context) error {
	owner := fmt.Sprintf("%s pid %d", s.cfg.Name, os.Getpid())
	sess, err := s.agents.Session(ctx, owner)
	if err != nil {
		return err
	}
	if _, err := sess.Register(ctx, s.inst); err != nil {
		sess.Close()
		return err
	}
	s.mu.Lock()
	if s.stopped || s.serveErr != nil {
		// Stop, or serving's end, came while this registration was on
		// its way and deregisters through the session set before, if
		// any: closing this one removes the instance it registered.
		s.mu.Unlock()
		sess.Close()
		return errStopping
	}
	s.session = sess
	s.mu.Unlock()
	return nil
}

// keepRegistered re-registers whenever the session ends before Stop, and
// through another agent when the session's agent is cut off from the Raft
// leader.
func (s *Server) keepRegistered() {
	for {
		s.mu.Lock()
		sess := s.session
		s.mu.Unlock()
		if sess == nil {
			return // Stop, or serving's end, took the session
		}
		var cutOff <-chan struct{}
		if len(s.cfg.agents()) > 1 {
			cutOff = sess.CutOff()
		}
		select {
		case <-s.ctx.Done():
			return
		case <-sess.Done():
		case <-cutOff:
			if s.moveOff(sess) {
				continue
			}
		}
		if s.ctx.Err() != nil {
			return // Stop, or serving's end, closed the session
		}
		s.log.Warn("registry session ended; registering again", "err", sess.Err())
		if !s.registerRetrying(nil, "register failed; retrying") {
			return
		}
		s.log.Info("registered again", "service", s.inst.Service, "id", s.inst.Id)
	}
}

// registerRetrying registers the instance through a new session, trying
// again after registerBackoff until it succeeds (true), or the server
// stops or until is closed (false). failed is the log line of a failed
// attempt.
func (s *Server) registerRetrying(until <-chan struct{}, failed string) bool {
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(s.ctx, registerAttemptTimeout)
		err := s.register(ctx)
		cancel()
		if err == nil {
			return true
		}
		if errors.Is(err, errStopping) {
			return false
		}
		wait := registerBackoff(attempt)
		s.log.Warn(failed, "err", err, "next_in", wait)
		select {
		case <-s.ctx.Done():
			return false
		case <-until:
			return false
		case <-time.After(wait):
		}
	}
}

// registerBackoff is the wait before register attempt n+1 (from 0): it
// doubles from 100 ms up to 5 s, jittered down by up to half.
func registerBackoff(attempt int) time.Duration {
	wait := min(100*time.Millisecond<<min(attempt, 6), 5*time.Second)
	return wait/2 + rand.N(wait/2+1)
}

// moveOff registers the instance again through an agent in contact with
// the Raft leader, and then closes old, whose agent is cut off from it
// (on the minority side of a partition the cluster sees that agent
// failed and the instance critical, while the session goes on). The new
// registration replaces the old one before old closes, so the instance
// is never missing; while no agent is in contact (the cluster lost its
// quorum) old is kept and moveOff tries again. It reports whether it
// moved; false when old ended or the server stops first.
func (s *Server) moveOff(old *client.Session) bool {
	s.log.Warn("registry session's agent is cut off from the Raft leader; registering through another agent")
	if !s.registerRetrying(old.Done(), "register through another agent failed; keeping the session and retrying") {
		return false
	}
	old.Close()
	s.log.Info("registered through another agent", "service", s.inst.Service, "id", s.inst.Id)
	return true
}

// deregisterTimeout bounds Stop's deregistration. An agent that does not
// answer (stopped, hung) must not take the time Stop has for draining
// calls: closing the session removes the instance all the same. A
// variable for tests.
var deregisterTimeout = 3 * time.Second

// serveFailed records err, which ended serving before Stop, ends the
// registration (a registration under way, and keepRegistered, see it)
// and deregisters the instance, so that callers are no longer sent to an
// address nothing serves. Done is closed after it.
func (s *Server) serveFailed(err error) {
	s.mu.Lock()
	s.serveErr = err
	sess := s.session
	s.session = nil
	s.mu.Unlock()
	s.cancel()
	s.health.Shutdown()
	s.log.Error("rpc server stopped serving; deregistering the instance (Stop the server, and start another to serve again)", "err", err)
	s.deregister(context.Background(), sess)
}

// deregister removes the instance through sess (nil: none registered),
// within deregisterTimeout, and closes sess.
func (s *Server) deregister(ctx context.Context, sess *client.Session) {
	if sess == nil {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, deregisterTimeout)
	err := sess.Deregister(dctx, s.inst.Service, s.inst.Id)
	cancel()
	if err != nil {
		s.log.Warn("deregister failed; closing the session removes the instance", "err", err)
	}
	sess.Close()
}

// Stop deregisters the instance, waits the drain delay so that clients
// move to other instances, then stops gracefully: running calls finish,
// until StopTimeout, after which they are cancelled. It returns what
// ended serving before it, if anything did (Err). Safe to call twice.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	starting := s.startDone
	s.mu.Unlock()
	s.cancel()
	s.health.Shutdown() // health checks now say NOT_SERVING
	if starting != nil {
		<-starting // a Start under way ends with s.ctx
	}
	// No session is set from now on (register sees stopped).
	s.mu.Lock()
	sess := s.session
	s.session = nil
	s.mu.Unlock()
	if sess != nil {
		s.deregister(ctx, sess)
		select {
		case <-ctx.Done():
		case <-time.After(s.cfg.DrainDelay):
		}
	}
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(s.cfg.StopTimeout):
		s.grpc.Stop()
		<-done
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
	s.wg.Wait()
	if s.agents != nil {
		s.agents.Close()
	}
	s.closeObservability(ctx)
	s.closeDone()
	return s.Err()
}

// closeObservability stops serving metrics, flushes the spans still
// queued (within ctx and the export timeout) and closes the log file.
func (s *Server) closeObservability(ctx context.Context) {
	s.metrics.stop(ctx)
	if s.tel != nil {
		if err := s.tel.shutdown(ctx); err != nil {
			s.log.Warn("spans lost at stop", "err", err)
		}
	}
	if s.logFile != nil {
		s.logFile.Close()
	}
}
