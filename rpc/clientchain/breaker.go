package clientchain

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/internal/methodtable"
	"github.com/zrpcio/zrpc/internal/monotime"
)

// BreakerConfig configures [Breaker]. Zero fields take the defaults of
// [DefaultBreakerConfig].
type BreakerConfig struct {
	// Mode is BreakerSRE (default: adaptive throttling) or BreakerClassic
	// (closed → open after Failures consecutive failures → half-open after
	// OpenFor, when one probe decides; a call its caller cancelled counts
	// neither way).
	Mode BreakerMode
	// Failures and OpenFor configure BreakerClassic. Defaults 5 and 5 s.
	Failures int
	OpenFor  time.Duration
	// K is the SRE multiplier: the client starts rejecting once requests
	// exceed K times the accepted ones. Lower is more aggressive. Default 1.5.
	K float64
	// Window is the rolling window over which requests and accepts are
	// counted. Default 10 s.
	Window time.Duration
	// Buckets is the number of buckets the window is split into. Default 10.
	Buckets int
	// Fallback, if set, is called instead of failing a rejected call; err is
	// the rejection (codes.Unavailable, "circuit breaker open for <method>")
	// and the call returns what Fallback returns. It runs on the caller's
	// goroutine and may block as long as ctx allows.
	Fallback func(ctx context.Context, method string, err error) error
	// Now and Rand replace time.Now and math/rand/v2.Float64, for tests.
	Now  func() time.Time
	Rand func() float64
}

// BreakerMode selects the breaker's algorithm.
type BreakerMode int

const (
	// BreakerSRE is Google SRE client-side adaptive throttling.
	BreakerSRE BreakerMode = iota
	// BreakerClassic is the closed/open/half-open circuit breaker.
	BreakerClassic
)

// DefaultBreakerConfig returns K 1.5, a 10 s window in 10 buckets, no
// fallback.
func DefaultBreakerConfig() BreakerConfig {
	return BreakerConfig{K: 1.5, Window: 10 * time.Second, Buckets: 10, Failures: 5, OpenFor: 5 * time.Second}
}

// Validate reports a configuration that cannot work.
func (c BreakerConfig) Validate() error {
	switch {
	case c.Mode != BreakerSRE && c.Mode != BreakerClassic:
		return errors.New("breaker: unknown Mode")
	case c.Failures < 0 || c.OpenFor < 0:
		return errors.New("breaker: Failures and OpenFor must not be negative")
	case c.K < 0:
		return errors.New("breaker: K must not be negative")
	case c.Window < 0:
		return errors.New("breaker: Window must not be negative")
	case c.Buckets < 0 || c.Buckets > 1000:
		return errors.New("breaker: Buckets must be between 1 and 1000")
	case c.Window > 0 && c.Buckets > 0 && c.Window/time.Duration(c.Buckets) <= 0:
		return errors.New("breaker: Window too short for Buckets")
	}
	return nil
}

func (c BreakerConfig) withDefaults() BreakerConfig {
	d := DefaultBreakerConfig()
	if c.K == 0 {
		c.K = d.K
	}
	if c.Window == 0 {
		c.Window = d.Window
	}
	if c.Buckets == 0 {
		c.Buckets = d.Buckets
	}
	if c.Failures == 0 {
		c.Failures = d.Failures
	}
	if c.OpenFor == 0 {
		c.OpenFor = d.OpenFor
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	return c
}

// Breaker returns an interceptor doing per-method client-side adaptive
// throttling (Google SRE book, "Handling Overload"). Over the rolling window
// it counts requests (including locally rejected ones) and accepts (calls
// that did not fail with Unavailable, DeadlineExceeded, Internal,
// ResourceExhausted, DataLoss or Unknown), and rejects a new call with
// probability max(0, (requests − K·accepts) / (requests + 1)). So a healthy
// method is never throttled, and a failing one still lets a trickle through
// that lets it recover on its own. It panics if cfg does not validate.
//
// This is per method across all instances; per-instance breaking is done by
// the p2c_ewma balancer in rpc/balancer. Unary only: see the package doc.
func Breaker(cfg BreakerConfig) grpc.UnaryClientInterceptor {
	return interceptor(newBreakerStage(cfg, invokerStage{}))
}

func newBreakerStage(cfg BreakerConfig, next unaryStage) *breakerStage {
	if err := cfg.Validate(); err != nil {
		panic("clientchain: " + err.Error())
	}
	cfg = cfg.withDefaults()
	return &breakerStage{cfg: cfg, bucket: cfg.Window / time.Duration(cfg.Buckets), next: next}
}

type breakerStage struct {
	cfg    BreakerConfig
	bucket time.Duration
	// methods and classic hold the state of at most methodtable.Max
	// methods each; further ones share one (methodtable.Other's).
	methods  methodtable.Table[*window]
	classic  methodtable.Table[*classicState]
	next     unaryStage
	onReject func(method string) // metrics hook; nil when metrics are off
}

func (s *breakerStage) reject(ctx context.Context, method string) error {
	if s.onReject != nil {
		s.onReject(method)
	}
	err := status.Error(codes.Unavailable, "circuit breaker open for "+method)
	if s.cfg.Fallback != nil {
		return s.cfg.Fallback(ctx, method, err)
	}
	return err
}

func (s *breakerStage) invoke(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts []grpc.CallOption) error {
	if s.cfg.Mode == BreakerClassic {
		return s.invokeClassic(ctx, method, req, reply, cc, inv, opts)
	}
	w := s.window(method)
	epoch := monotime.Of(s.cfg.Now()) / int64(s.bucket)
	// With K >= 1 a window whose every request was accepted never
	// rejects, so a method with no failure in the window skips the sum.
	if s.cfg.K < 1 || w.failedWithin(epoch) {
		requests, accepts := w.sum(epoch)
		if p := (float64(requests) - s.cfg.K*float64(accepts)) / float64(requests+1); p > 0 && s.cfg.Rand() < p {
			w.add(epoch, false)
			return s.reject(ctx, method)
		}
	}
	err := s.next.invoke(ctx, method, req, reply, cc, inv, opts)
	w.add(monotime.Of(s.cfg.Now())/int64(s.bucket), !breakerFailure(err))
	return err
}

func (s *breakerStage) window(method string) *window {
	return s.methods.Get(method, func(string) *window {
		w := &window{buckets: make([]atomic.Uint64, s.cfg.Buckets)}
		w.failed.Store(math.MinInt64 / 2)
		return w
	})
}

// breakerFailure reports whether err means the backend did not accept the
// call (as opposed to rejecting it on its merits, like InvalidArgument).
func breakerFailure(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Internal,
		codes.ResourceExhausted, codes.DataLoss, codes.Unknown:
		return true
	}
	return false
}

// window is a lock-free rolling window. Each bucket packs its epoch (bucket
// number modulo 2^24), request count and accept count (20 bits each,
// saturating at about a million per bucket) into one word updated with CAS.
// failed is the latest epoch with a request that was not accepted, so that
// a method that has not failed lately is judged without reading the
// buckets.
type window struct {
	buckets []atomic.Uint64
	failed  atomic.Int64
}

// failedWithin reports whether a request was not accepted in the window
// ending at epoch.
func (w *window) failedWithin(epoch int64) bool {
	return epoch-w.failed.Load() < int64(len(w.buckets))
}

const (
	countBits  = 20
	countMask  = 1<<countBits - 1
	epochShift = 2 * countBits
	epochMask  = 1<<24 - 1
)

func (w *window) add(epoch int64, accepted bool) {
	if !accepted {
		for f := w.failed.Load(); f < epoch && !w.failed.CompareAndSwap(f, epoch); f = w.failed.Load() {
		}
	}
	e := uint64(epoch) & epochMask
	b := &w.buckets[uint64(epoch)%uint64(len(w.buckets))]
	for {
		old := b.Load()
		var req, acc uint64
		if old>>epochShift == e {
			req, acc = old>>countBits&countMask, old&countMask
		}
		if req < countMask {
			req++
			if accepted {
				acc++
			}
		}
		if b.CompareAndSwap(old, e<<epochShift|req<<countBits|acc) {
			return
		}
	}
}

// sum returns requests and accepts in the buckets of the last len(buckets)
// epochs up to epoch.
func (w *window) sum(epoch int64) (requests, accepts uint64) {
	n := uint64(len(w.buckets))
	cur := uint64(epoch) & epochMask
	for i := range w.buckets {
		v := w.buckets[i].Load()
		if v == 0 {
			continue
		}
		if age := (cur - v>>epochShift) & epochMask; age < n {
			requests += v >> countBits & countMask
			accepts += v & countMask
		}
	}
	return requests, accepts
}

// classicState is one method's classic breaker: closed while failures <
// Failures; open until openUntil; then half-open, when the one call that
// wins the probe flag decides between closed and open again.
type classicState struct {
	failures  atomic.Int64
	openUntil atomic.Int64 // a monotonic instant (internal/monotime); 0 when closed
	probing   atomic.Bool
}

func (s *breakerStage) invokeClassic(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts []grpc.CallOption) error {
	st := s.classic.Get(method, func(string) *classicState { return &classicState{} })
	probe := false
	if until := st.openUntil.Load(); until != 0 {
		if monotime.Of(s.cfg.Now()) < until || !st.probing.CompareAndSwap(false, true) {
			return s.reject(ctx, method) // open, or half-open with a probe in flight
		}
		probe = true
	}
	err := s.next.invoke(ctx, method, req, reply, cc, inv, opts)
	switch {
	case status.Code(err) == codes.Canceled && ctx.Err() != nil:
		// The caller gave up (Canceled): no word on the backend's health.
		// A failure run goes on; a probe leaves the breaker half-open, so
		// the next call probes again.
	case !breakerFailure(err):
		st.failures.Store(0)
		st.openUntil.Store(0)
	case probe || st.failures.Add(1) >= int64(s.cfg.Failures):
		st.openUntil.Store(monotime.Of(s.cfg.Now().Add(s.cfg.OpenFor)))
	}
	if probe {
		st.probing.Store(false)
	}
	return err
}
