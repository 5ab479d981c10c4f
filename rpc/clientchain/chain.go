package clientchain

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// Config selects and configures the stages of the default client chain.
// Start from [DefaultConfig]; every stage can be turned off.
type Config struct {
	// NoPropagate disables metadata propagation ([Propagate]).
	NoPropagate bool
	// Registerer receives the client metrics ([Metrics]); nil disables them.
	Registerer prometheus.Registerer
	// Breaker configures [Breaker]; NoBreaker disables it.
	Breaker   BreakerConfig
	NoBreaker bool
	// Retry configures [Retry]; NoRetry disables it.
	Retry   RetryConfig
	NoRetry bool
	// Timeout bounds each unary attempt ([Timeout]); 0 disables it.
	// Default 2 s.
	Timeout time.Duration
	// MethodTimeouts overrides Timeout (and StreamTimeout) per full method
	// name; a value <= 0 means no timeout for that method.
	MethodTimeouts map[string]time.Duration
	// StreamTimeout bounds the life of each stream ([TimeoutStream]); 0,
	// the default, disables it, since streams are often long-lived.
	StreamTimeout time.Duration
	// Hedge sends a second attempt of a slow call of an idempotent method
	// to another instance (see [HedgeConfig]); the zero value hedges
	// nothing.
	Hedge HedgeConfig
}

// DefaultConfig returns the chain rpc.Dial uses: propagation on, no metrics
// (no Registerer), the default breaker and retry, a 2 s per-attempt timeout
// and no stream timeout.
func DefaultConfig() Config {
	return Config{
		Breaker: DefaultBreakerConfig(),
		Retry:   DefaultRetryConfig(),
		Timeout: DefaultTimeout,
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.Timeout < 0 {
		errs = append(errs, errors.New("Timeout must not be negative"))
	}
	if c.StreamTimeout < 0 {
		errs = append(errs, errors.New("StreamTimeout must not be negative"))
	}
	if !c.NoBreaker {
		errs = append(errs, c.Breaker.Validate())
	}
	if !c.NoRetry {
		errs = append(errs, c.Retry.Validate())
	}
	errs = append(errs, c.Hedge.validate(c.Retry.Idempotent))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clientchain config: %w", err)
	}
	return nil
}

// Chain is [NewChain] for configurations known to be valid, in the manner of
// prometheus.MustRegister: it panics if cfg does not validate or the metrics
// cannot be registered. Call cfg.Validate first when cfg comes from input.
func Chain(cfg Config) (grpc.UnaryClientInterceptor, grpc.StreamClientInterceptor) {
	u, s, err := NewChain(cfg)
	if err != nil {
		panic(err)
	}
	return u, s
}

// NewChain builds the default client chain, outermost first:
// propagate → metrics → breaker → retry → hedge → timeout (hedge only when
// cfg.Hedge names methods). The stream interceptor has
// propagate → metrics → stream timeout (breaker and retry are unary only).
// Stages are linked directly, so a unary call through the chain allocates
// nothing beyond what the stages themselves need. It returns an error if cfg
// does not validate or the metrics cannot be registered.
func NewChain(cfg Config) (grpc.UnaryClientInterceptor, grpc.StreamClientInterceptor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	var metrics *clientMetrics
	if cfg.Registerer != nil {
		m, err := newClientMetrics(cfg.Registerer)
		if err != nil {
			return nil, nil, fmt.Errorf("clientchain: register metrics: %w", err)
		}
		metrics = m
	}

	// Built innermost first.
	var head unaryStage = invokerStage{}
	if cfg.Timeout > 0 || len(cfg.MethodTimeouts) > 0 {
		head = newTimeoutStage(cfg.Timeout, cfg.MethodTimeouts, head)
	}
	hedge, err := newChainHedge(cfg, head)
	if err != nil {
		return nil, nil, err
	}
	if hedge != nil {
		head = hedge
	}
	if !cfg.NoRetry {
		r := newRetryStage(cfg.Retry, head)
		if hedge != nil && !cfg.Retry.NoBudget {
			hedge.shareBudget(&r.budget)
		}
		if metrics != nil {
			r.onRetry = metrics.retried
		}
		head = r
	}
	if !cfg.NoBreaker {
		b := newBreakerStage(cfg.Breaker, head)
		if metrics != nil {
			b.onReject = metrics.rejectedCall
		}
		head = b
	}
	if metrics != nil {
		head = &metricsStage{m: metrics, next: head}
	}
	if !cfg.NoPropagate {
		head = &propagateStage{next: head}
	}

	var streams []grpc.StreamClientInterceptor
	if !cfg.NoPropagate {
		streams = append(streams, PropagateStream())
	}
	if metrics != nil {
		streams = append(streams, metricsStream(metrics))
	}
	if cfg.StreamTimeout > 0 || len(cfg.MethodTimeouts) > 0 {
		streams = append(streams, TimeoutStream(cfg.StreamTimeout, cfg.MethodTimeouts))
	}
	return interceptor(head), chainStream(streams), nil
}
