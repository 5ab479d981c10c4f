package clientchain

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// RetryConfig configures [Retry]. Zero fields take the defaults of
// [DefaultRetryConfig].
type RetryConfig struct {
	// MaxAttempts is the most attempts per call, the first included.
	// Default 3; 1 disables retries.
	MaxAttempts int
	// BaseBackoff and MaxBackoff bound the exponential backoff: before retry
	// n (1-based) the client sleeps a uniformly random time in
	// [0, min(MaxBackoff, BaseBackoff·2^(n-1))) ("full jitter"). Defaults
	// 25 ms and 1 s.
	BaseBackoff, MaxBackoff time.Duration
	// Idempotent lists full method names ("/pkg.Service/Method") that are
	// safe to run twice. They are retried on Unavailable, ResourceExhausted,
	// Aborted, Internal and, while the caller's context is live,
	// DeadlineExceeded (a per-attempt timeout from [Timeout] expired).
	// Other methods are retried only on Unavailable and only when the
	// attempt provably never reached a server: it got no transport stream
	// (no instance could be picked, or the connection could not be made).
	// grpc-go also answers Unavailable when a connection drops mid-call,
	// after the server may have run the call; that is not retried.
	// `zrpcctl gen` lists the methods a .proto marks with
	// `option idempotency_level = IDEMPOTENT` (or NO_SIDE_EFFECTS).
	Idempotent []string
	// BudgetMax and BudgetRatio size the retry budget shared by all calls
	// through one interceptor: a token bucket holding at most BudgetMax
	// tokens (it starts full), to which each successful call adds
	// BudgetRatio tokens and from which each retry takes one. A retry with
	// less than one token left is not made, so retries stay under about
	// BudgetRatio of traffic. Defaults 10 and 0.1.
	BudgetMax, BudgetRatio float64
	// NoBudget disables the retry budget.
	NoBudget bool
	// Rand replaces math/rand/v2.Float64, for tests.
	Rand func() float64
}

// DefaultRetryConfig returns 3 attempts, backoff 25 ms to 1 s with full
// jitter, no idempotent methods, and a budget of 10 tokens refilled at 0.1 per
// success.
func DefaultRetryConfig() RetryConfig {
	return RetryConfig{MaxAttempts: 3, BaseBackoff: 25 * time.Millisecond, MaxBackoff: time.Second, BudgetMax: 10, BudgetRatio: 0.1}
}

// Validate reports a configuration that cannot work.
func (c RetryConfig) Validate() error {
	switch {
	case c.MaxAttempts < 0:
		return errors.New("retry: MaxAttempts must not be negative")
	case c.BaseBackoff < 0 || c.MaxBackoff < 0:
		return errors.New("retry: backoff must not be negative")
	case c.BaseBackoff > 0 && c.MaxBackoff > 0 && c.MaxBackoff < c.BaseBackoff:
		return errors.New("retry: MaxBackoff must not be below BaseBackoff")
	case c.BudgetMax < 0 || c.BudgetRatio < 0:
		return errors.New("retry: budget must not be negative")
	}
	return nil
}

func (c RetryConfig) withDefaults() RetryConfig {
	d := DefaultRetryConfig()
	if c.MaxAttempts == 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	if c.BaseBackoff == 0 {
		c.BaseBackoff = d.BaseBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(d.MaxBackoff, c.BaseBackoff)
	}
	if c.BudgetMax == 0 {
		c.BudgetMax = d.BudgetMax
	}
	if c.BudgetRatio == 0 {
		c.BudgetRatio = d.BudgetRatio
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	return c
}

// Retry returns an interceptor that retries failed attempts as RetryConfig
// describes. It never sleeps past the caller's deadline: when the next
// backoff would end after it, the last error is returned at once. Each
// attempt's instance is recorded, and later attempts carry the addresses of
// the failed ones in their context (see [ExcludedFrom]), so the balancer can
// pick another instance. It learns the instance from grpc's peer call
// option, or, once the connection's balancer has noted a pick and its end
// in the [PickNote] the stage hands it, from the note alone, and then adds
// no call option. It panics if cfg does not validate. Unary only.
func Retry(cfg RetryConfig) grpc.UnaryClientInterceptor {
	return interceptor(newRetryStage(cfg, invokerStage{}))
}

func newRetryStage(cfg RetryConfig, next unaryStage) *retryStage {
	if err := cfg.Validate(); err != nil {
		panic("clientchain: " + err.Error())
	}
	cfg = cfg.withDefaults()
	s := &retryStage{cfg: cfg, idempotent: make(map[string]bool, len(cfg.Idempotent)), next: next}
	for _, m := range cfg.Idempotent {
		s.idempotent[m] = true
	}
	s.noted, _ = next.(notingStage)
	s.budget.init(cfg.BudgetMax, cfg.BudgetRatio)
	return s
}

type retryStage struct {
	cfg        RetryConfig
	idempotent map[string]bool
	budget     retryBudget
	next       unaryStage
	// noted is next when it hands a PickNote to the picker (the hedge
	// stage, whose attempts pick twice, does not); nil otherwise.
	noted notingStage
	// notingConn is the last ClientConn whose balancer noted a pick and
	// its end: its calls learn their instance from the note alone.
	notingConn atomic.Pointer[grpc.ClientConn]
	onRetry    func(method string) // metrics hook; nil when metrics are off
}

// attempt carries the per-call state that would otherwise be allocated on
// every call: the pick note, the peer the call option fills in and room
// for the options.
type attempt struct {
	note PickNote
	peer peer.Peer
	opt  grpc.CallOption // grpc.Peer(&peer), built once per pooled attempt
	opts [8]grpc.CallOption
}

var attempts = sync.Pool{New: func() any {
	a := new(attempt)
	a.opt = grpc.Peer(&a.peer)
	return a
}}

func (s *retryStage) invoke(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts []grpc.CallOption) error {
	a := attempts.Get().(*attempt)
	defer func() {
		a.note.reset()
		a.peer = peer.Peer{}
		clear(a.opts[:])
		attempts.Put(a)
	}()
	noteOnly := s.noted != nil && cc != nil && s.notingConn.Load() == cc
	callOpts := opts
	if !noteOnly {
		callOpts = append(append(a.opts[:0], opts...), a.opt)
	}
	for n := 1; ; n++ {
		a.note.reset()
		a.peer = peer.Peer{}
		var err error
		if s.noted != nil {
			err = s.noted.invokeNoted(ctx, &a.note, method, req, reply, cc, inv, callOpts)
			if !noteOnly && cc != nil && a.note.finished() {
				s.notingConn.Store(cc)
			}
		} else {
			err = s.next.invoke(ctx, method, req, reply, cc, inv, callOpts)
		}
		if err == nil {
			s.budget.success()
			return nil
		}
		addr, reached := a.reached(noteOnly)
		if n >= s.cfg.MaxAttempts || !s.retryable(ctx, method, err, reached) {
			return err
		}
		wait := s.backoff(n)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= wait {
			return err
		}
		if !s.cfg.NoBudget && !s.budget.spend() {
			return err
		}
		if addr != "" {
			ctx = WithExcluded(ctx, addr)
		}
		if s.onRetry != nil {
			s.onRetry(method)
		}
		if sleep(ctx, wait) != nil {
			return err
		}
	}
}

// reached returns the instance the failed attempt was sent to ("" if
// none is known) and whether the attempt may have reached it: from the
// pick note when noteOnly, else from grpc's peer (filled in when the
// attempt got a transport stream).
func (a *attempt) reached(noteOnly bool) (addr string, reached bool) {
	if noteOnly {
		return a.note.Addr(), a.note.reached()
	}
	if a.peer.Addr == nil {
		return "", false
	}
	return a.peer.Addr.String(), true
}

// retryable says whether a failed attempt may be sent again; reached says
// the attempt had a transport stream, so a server may have run it.
func (s *retryStage) retryable(ctx context.Context, method string, err error, reached bool) bool {
	switch status.Code(err) {
	case codes.Unavailable:
		return ctx.Err() == nil && (!reached || s.idempotent[method])
	case codes.ResourceExhausted, codes.Aborted, codes.Internal, codes.DeadlineExceeded:
		return s.idempotent[method] && ctx.Err() == nil
	}
	return false
}

// backoff returns the full-jitter sleep before retry n (1-based).
func (s *retryStage) backoff(n int) time.Duration {
	ceil := s.cfg.MaxBackoff
	// BaseBackoff·2^(n-1) when below MaxBackoff, checked before shifting
	// so that a long base doubled many times does not wrap around.
	if n-1 < 63 && s.cfg.BaseBackoff <= ceil>>(n-1) {
		ceil = s.cfg.BaseBackoff << (n - 1)
	}
	return time.Duration(s.cfg.Rand() * float64(ceil))
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryBudget is a lock-free token bucket counted in thousandths of a token.
type retryBudget struct {
	milli         atomic.Int64
	max, perGrant int64
}

func (b *retryBudget) init(maxTokens, ratio float64) {
	b.max = int64(maxTokens * 1000)
	b.perGrant = int64(ratio * 1000)
	b.milli.Store(b.max)
}

func (b *retryBudget) success() {
	for {
		old := b.milli.Load()
		if old >= b.max {
			return
		}
		if b.milli.CompareAndSwap(old, min(b.max, old+b.perGrant)) {
			return
		}
	}
}

func (b *retryBudget) spend() bool {
	for {
		old := b.milli.Load()
		if old < 1000 {
			return false
		}
		if b.milli.CompareAndSwap(old, old-1000) {
			return true
		}
	}
}

type excludedKey struct{}

// ExcludedFrom returns the addresses (net.Addr.String() of the peer) of
// instances on which earlier attempts of this call failed; a balancer's
// picker should avoid them when it has another ready instance. rpc/balancer
// honours it. The slice must not be modified.
func ExcludedFrom(ctx context.Context) []string {
	v, _ := ctx.Value(excludedKey{}).([]string)
	return v
}

// WithExcluded returns ctx with addr added to the addresses balancers avoid
// for this call (retry adds the peers of failed attempts).
func WithExcluded(ctx context.Context, addr string) context.Context {
	old := ExcludedFrom(ctx)
	for _, a := range old {
		if a == addr {
			return ctx
		}
	}
	next := make([]string, len(old), len(old)+1)
	copy(next, old)
	return context.WithValue(ctx, excludedKey{}, append(next, addr))
}
