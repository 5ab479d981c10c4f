package serverchain

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// Config selects and tunes the stages Chain installs. Start from
// DefaultConfig.
type Config struct {
	// Logger receives panics (Error) and slow or failed calls (Warn).
	// Nil discards.
	Logger *slog.Logger
	// Registerer receives the zrpc_server_* metrics. Nil leaves them
	// unregistered. Default prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
	// SlowThreshold: unary calls at least this slow are logged. 0 means
	// DefaultSlowThreshold; negative disables slow logging. Default 500ms.
	SlowThreshold time.Duration
	// Tokens, if any, are accepted bearer tokens (see StaticTokens).
	Tokens []string
	// Verifier, if set, checks tokens (it takes precedence over Tokens).
	// Auth is installed when Tokens or Verifier is set. Default off.
	Verifier func(ctx context.Context, token string) error
	// RateLimit is calls per second per method; 0 disables. Default off.
	RateLimit float64
	// RateBurst is the per-method burst; 0 means ceil(RateLimit).
	RateBurst int
	// Shedding enables adaptive load shedding (see Shed). Default on.
	Shedding bool
	// MaxInFlight is the shedder's hard cap on concurrent calls; 0 means
	// none (adaptive limit only). Default 0.
	MaxInFlight int
	// Timeout bounds unary calls (see Timeout); 0 disables. Default 2s.
	Timeout time.Duration
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Registerer:    prometheus.DefaultRegisterer,
		SlowThreshold: DefaultSlowThreshold,
		Shedding:      true,
		Timeout:       2 * time.Second,
	}
}

// Validate reports a config Chain cannot use.
func (c Config) Validate() error {
	switch {
	case c.RateLimit < 0:
		return errors.New("serverchain: RateLimit must be >= 0")
	case c.RateBurst < 0:
		return errors.New("serverchain: RateBurst must be >= 0")
	case c.MaxInFlight < 0:
		return errors.New("serverchain: MaxInFlight must be >= 0")
	case c.Timeout < 0:
		return errors.New("serverchain: Timeout must be >= 0")
	}
	return nil
}

// Chain builds the configured stages into one unary and one stream
// interceptor, in this order:
//
//	recover → metrics/slow-log → auth → rate limit → shedding → timeout
//
// Recover and metrics share one deferred function, so a panic anywhere in
// the chain or handler becomes codes.Internal and is counted as such.
// Auth, rate limit and shedding are installed only when configured; health
// checks are never rate limited or shed, and streams count toward
// MaxInFlight only (see Shed).
// Streams get every stage except Timeout: streams are often long-lived
// (watches), and a default 2s bound would cut them; use Timeout(d).Stream
// explicitly where it fits.
//
// The stages are called directly, not nested as closures, so a call through
// the default chain allocates only the timeout context (and not even its
// timer unless the handler asks for Done). Chain panics if cfg.Validate
// fails or the metrics cannot be registered.
func Chain(cfg Config) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	c := &chain{
		log:     orDiscard(cfg.Logger),
		met:     newMetrics(cfg.Registerer, cfg.Logger, cfg.SlowThreshold, time.Now),
		verify:  cfg.Verifier,
		timeout: cfg.Timeout,
	}
	if c.verify == nil && len(cfg.Tokens) > 0 {
		c.verify = StaticTokens(cfg.Tokens...)
	}
	if cfg.RateLimit > 0 {
		c.rate = newRateLimiter(cfg.RateLimit, cfg.RateBurst, time.Now)
	}
	if cfg.Shedding {
		c.shed = newShedder(cfg.MaxInFlight)
	}
	return c.unary, c.stream
}

type chain struct {
	log     *slog.Logger
	met     *metrics
	verify  func(context.Context, string) error // nil: no auth
	rate    *rateLimiter                        // nil: no rate limit
	shed    *shedder                            // nil: no shedding
	timeout time.Duration
}

// admit runs auth, rate limiting and shedding for a call (a stream when
// stream is set) that started at now. It reports whether the shedder
// counted the call: then the caller must end it in finish.
func (c *chain) admit(ctx context.Context, method string, stream bool, now time.Time) (shedCounted bool, err error) {
	if c.verify != nil {
		if err := authorize(ctx, method, c.verify); err != nil {
			return false, err
		}
	}
	if unlimited(method) {
		return false, nil
	}
	if c.rate != nil {
		if err := c.rate.allow(method); err != nil {
			return false, err
		}
	}
	if c.shed == nil {
		return false, nil
	}
	if stream {
		err = c.shed.beginStream()
	} else {
		err = c.shed.beginAt(now)
	}
	return err == nil, err
}

// healthPrefix is the method prefix of the gRPC health service.
const healthPrefix = "/grpc.health.v1.Health/"

// unlimited reports whether method is exempt from rate limiting and
// shedding: health checks, whose refusal would take a busy but working
// instance out of its load balancers and the registry (the agent checks
// it too), and whose callers hold no token to tell them apart.
func unlimited(method string) bool { return strings.HasPrefix(method, healthPrefix) }

// The stages share two readings of the clock per call, the start and the
// end, instead of each reading its own.

func (c *chain) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	method := info.FullMethod
	start := c.met.begin()
	counted := false
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, panicError(ctx, c.log, method, r)
		}
		c.finish(ctx, method, start, counted, false, err)
	}()
	shedCounted, err := c.admit(ctx, method, false, start)
	if err != nil {
		return nil, err
	}
	counted = shedCounted
	tctx, ld := withTimeoutFrom(ctx, c.timeout, start)
	defer ld.release()
	return handler(tctx, req)
}

func (c *chain) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	method := info.FullMethod
	ctx := ss.Context()
	start := c.met.begin()
	counted := false
	defer func() {
		if r := recover(); r != nil {
			err = panicError(ctx, c.log, method, r)
		}
		c.finish(ctx, method, start, counted, true, err)
	}()
	shedCounted, err := c.admit(ctx, method, true, start)
	if err != nil {
		return err
	}
	counted = shedCounted
	return handler(srv, ss)
}

// finish ends the shedder's count of a call it counted and records the
// call's metrics.
func (c *chain) finish(ctx context.Context, method string, start time.Time, shedCounted, stream bool, err error) {
	end := c.met.now()
	switch {
	case !shedCounted:
	case stream:
		c.shed.endStream()
	default:
		c.shed.endAt(start, end)
	}
	c.met.endAt(ctx, method, start, end, stream, err)
}
