package clientchain

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// DefaultHedgeMinDelay is the least wait before a hedge when
// HedgeConfig.MinDelay is 0.
const DefaultHedgeMinDelay = 5 * time.Millisecond

// HedgeConfig configures the hedge stage: a call of a hedged method that
// has not answered after the method's recent 95th-percentile latency (and
// at least MinDelay) is sent a second time, to another instance; the first
// answer wins and the other attempt is cancelled. "Another instance" needs
// a balancer that notes its pick ([PickNote]) and honours [ExcludedFrom]:
// rpc/balancer's p2c_ewma, zrpc's default; with other balancers the hedge
// goes wherever the balancer sends it. Hedging is for the tail
// of latency: a call stuck on a slow instance (a GC pause, a cold cache, a
// busy neighbour) is answered by a healthy one. The zero value hedges
// nothing.
//
// Only idempotent methods may be hedged, since a hedged call can run on two
// instances: every method named here must be in RetryConfig.Idempotent
// (Validate says which is not). Each hedge takes a token from the retry
// budget ([RetryConfig] BudgetMax, BudgetRatio), so hedges and retries
// together stay within it and hedging cannot double the load of an
// overloaded service; without a retry stage, or with its budget off, the
// hedge stage keeps a budget of its own of the default size.
//
// A call of a hedged method costs a timer, a cancellable context and a few
// small allocations more than one of another method; the hedge, when sent,
// also a reply of its own, copied into the caller's if it wins. A reply
// that is not a protobuf message is never hedged.

type HedgeConfig struct {
	// Methods lists full method names ("/pkg.Service/Method") to hedge.
	Methods []string `yaml:"Methods"`
	// Idempotent hedges every method in RetryConfig.Idempotent (which
	// `zrpcctl gen` fills from the .proto's idempotency_level options).
	Idempotent bool `yaml:"Idempotent"`
	// MinDelay is the least wait before a hedge, however fast the method
	// usually answers. Default 5ms.
	MinDelay time.Duration `yaml:"MinDelay"`
}

// Enabled reports whether c hedges any method.
func (c HedgeConfig) Enabled() bool { return len(c.Methods) > 0 || c.Idempotent }

// validate reports a configuration that cannot work, given the methods
// known to be idempotent.
func (c HedgeConfig) validate(idempotent []string) error {
	var errs []error
	if c.MinDelay < 0 {
		errs = append(errs, fmt.Errorf("hedge: MinDelay %s must not be negative", c.MinDelay))
	}
	for _, m := range c.Methods {
		if !slices.Contains(idempotent, m) {
			errs = append(errs, fmt.Errorf("hedge: method %q is not idempotent: a hedged call may run twice, so list it in the retry stage's Idempotent methods (rpc.WithIdempotent, or idempotency_level in the .proto) or do not hedge it", m))
		}
	}
	return errors.Join(errs...)
}

// hedged returns the methods c hedges.
func (c HedgeConfig) hedged(idempotent []string) []string {
	if c.Idempotent {
		return append(slices.Clip(c.Methods), idempotent...)
	}
	return c.Methods
}

// Outcomes of zrpc_client_hedges_total.
const (
	hedgeWon      = "won"       // the hedge answered first
	hedgeLost     = "lost"      // the first attempt answered first
	hedgeFailed   = "failed"    // neither answered: both failed
	hedgeNoBudget = "no_budget" // due, but the retry budget was empty: not sent
)

func newHedgeCounter(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	return register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "zrpc_client_hedges_total",
		Help: "Hedged attempts by full method and outcome: won (answered first), lost (the first attempt answered first), failed (both failed), no_budget (due but not sent: the retry budget was empty).",
	}, []string{"method", "outcome"}))
}

// hedgeStage sends a second attempt of a slow call of a hedged method to
// another instance. It sits between retry and timeout, so each attempt has
// its own per-attempt timeout and a retry may itself be hedged.
type hedgeStage struct {
	methods  map[string]*latencyQuantile // read-only once built
	minDelay time.Duration
	budget   *retryBudget
	// ownBudget is set while budget is the stage's own (no retry stage
	// shares one): then the stage credits it on success.
	ownBudget bool
	next      unaryStage
	onHedge   func(method, outcome string) // metrics hook; nil when metrics are off
	// notesPicks is set once a first attempt ended with its pick noted:
	// the balancer notes its picks (PickNote), so a first attempt with
	// none noted yet has not picked an instance.
	notesPicks atomic.Bool
}

// newChainHedge returns the hedge stage of cfg's chain in front of next, or
// nil when cfg hedges nothing.
func newChainHedge(cfg Config, next unaryStage) (*hedgeStage, error) {
	if !cfg.Hedge.Enabled() {
		return nil, nil
	}
	s := newHedgeStage(cfg.Hedge, cfg.Hedge.hedged(cfg.Retry.Idempotent), next)
	if cfg.Registerer != nil {
		hedges, err := newHedgeCounter(cfg.Registerer)
		if err != nil {
			return nil, fmt.Errorf("clientchain: register metrics: %w", err)
		}
		s.onHedge = func(method, outcome string) { hedges.WithLabelValues(method, outcome).Inc() }
	}
	return s, nil
}

func newHedgeStage(cfg HedgeConfig, methods []string, next unaryStage) *hedgeStage {
	s := &hedgeStage{
		methods:   make(map[string]*latencyQuantile, len(methods)),
		minDelay:  cfg.MinDelay,
		budget:    new(retryBudget),
		ownBudget: true,
		next:      next,
	}
	if s.minDelay == 0 {
		s.minDelay = DefaultHedgeMinDelay
	}
	for _, m := range methods {
		s.methods[m] = new(latencyQuantile)
	}
	d := DefaultRetryConfig()
	s.budget.init(d.BudgetMax, d.BudgetRatio)
	return s
}

// shareBudget makes the stage spend b, the retry stage's budget, which that
// stage credits.
func (s *hedgeStage) shareBudget(b *retryBudget) { s.budget, s.ownBudget = b, false }

func (s *hedgeStage) invoke(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts []grpc.CallOption) error {
	lat := s.methods[method]
	if lat == nil {
		return s.next.invoke(ctx, method, req, reply, cc, inv, opts)
	}
	var err error
	msg, isProto := reply.(proto.Message)
	if delay := lat.quantile(); delay > 0 && isProto {
		err = s.hedged(ctx, max(delay, s.minDelay), lat, method, req, msg, cc, inv, opts)
	} else {
		// Too few calls measured for a percentile (or a reply that cannot
		// be duplicated): one attempt, measured.
		start := time.Now()
		err = s.next.invoke(ctx, method, req, reply, cc, inv, opts)
		if ctx.Err() == nil {
			lat.observe(time.Since(start))
		}
	}
	if err == nil && s.ownBudget {
		s.budget.success()
	}
	return err
}

// maxPickLookWait is the longest a hedge waits between two looks for the
// first attempt's pick.
const maxPickLookWait = time.Second

// hedgeCall is one call that may be hedged: the first attempt runs on the
// caller's goroutine, the hedge on the timer's, and they meet under mu.
type hedgeCall struct {
	s      *hedgeStage
	method string
	req    any
	reply  proto.Message
	// replyType makes the hedge's reply; taken before the first attempt
	// starts, since reading reply's type while it decodes would race.
	replyType protoreflect.MessageType
	cc        *grpc.ClientConn
	inv       grpc.UnaryInvoker
	opts      []grpc.CallOption
	ctx       context.Context // the caller's
	note      PickNote        // the first attempt's instance
	delay     time.Duration   // the wait before the hedge, then before each look for the first pick

	mu            sync.Mutex
	timer         *time.Timer // runs launch; replaced when launch waits for the first pick
	firstDone     bool
	launched      bool // a hedge was sent
	winner        hedgeWinner
	cancelFirst   context.CancelFunc
	hedge         hedgeAttempt
	cancelHedgeFn context.CancelFunc
	done          chan struct{} // closed when the last launch returns
}

// hedgeWinner says which attempt's result is the call's.
type hedgeWinner int

const (
	winnerNone hedgeWinner = iota
	winnerFirst
	winnerHedge
)

// hedgeAttempt holds the hedge's own reply and the call options grpc-go
// writes into, so that two attempts never write the same memory.
type hedgeAttempt struct {
	err     error
	reply   proto.Message
	peer    peer.Peer
	header  metadata.MD
	trailer metadata.MD
}

func (s *hedgeStage) hedged(ctx context.Context, delay time.Duration, lat *latencyQuantile, method string, req any, reply proto.Message, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts []grpc.CallOption) error {
	c := &hedgeCall{s: s, method: method, req: req, reply: reply, replyType: reply.ProtoReflect().Type(), cc: cc, inv: inv, opts: opts,
		ctx: ctx, delay: delay, done: make(chan struct{})}
	firstCtx, cancelFirst := context.WithCancel(WithPickNote(ctx, &c.note))
	defer cancelFirst()
	c.cancelFirst = cancelFirst
	// The first attempt writes the caller's reply and options.
	c.mu.Lock()
	c.timer = time.AfterFunc(delay, c.launch)
	c.mu.Unlock()
	start := time.Now()
	firstErr := s.next.invoke(firstCtx, method, req, reply, cc, inv, opts)
	elapsed := time.Since(start)
	if ctx.Err() == nil {
		// When the hedge won, the first attempt was cancelled; its time so
		// far still says the method took at least that long.
		lat.observe(elapsed)
	}
	if c.note.Addr() != "" {
		s.notesPicks.Store(true)
	}

	c.mu.Lock()
	c.firstDone = true
	timer := c.timer
	launched := c.launched
	if launched && c.winner == winnerNone && answered(firstErr) {
		c.winner = winnerFirst
		c.cancelHedgeFn()
	}
	c.mu.Unlock()
	if !timer.Stop() {
		// launch has started; it ends at once if it sent nothing and as
		// soon as the hedge returns (cancelled, if the first answered).
		<-c.done
	}
	if !launched {
		return firstErr
	}
	switch {
	case c.winner == winnerHedge:
		s.count(method, hedgeWon)
		c.adoptHedge()
		return c.hedge.err
	case c.winner == winnerFirst && ctx.Err() == nil:
		s.count(method, hedgeLost)
		return firstErr
	}
	// Both failed, or the caller gave up before either answered.
	s.count(method, hedgeFailed)
	return firstErr
}

// launch sends the hedge, on the timer's goroutine, unless the first
// attempt has ended, the caller has gone or the budget is empty. When the
// balancer notes its picks and the first attempt has not picked an
// instance yet (it waits for one to be ready), a hedge now could not be
// kept off that instance and would wait for the same ones: launch looks
// again later, after twice the wait each time, up to a second between
// looks.
func (c *hedgeCall) launch() {
	c.mu.Lock()
	if c.firstDone || c.ctx.Err() != nil {
		c.mu.Unlock()
		close(c.done)
		return
	}
	addr := c.note.Addr()
	if addr == "" && c.s.notesPicks.Load() {
		c.delay = min(2*c.delay, max(c.delay, maxPickLookWait))
		c.timer = time.AfterFunc(c.delay, c.launch)
		c.mu.Unlock()
		return // the next launch closes done
	}
	defer close(c.done)
	if !c.s.budget.spend() {
		c.mu.Unlock()
		c.s.count(c.method, hedgeNoBudget)
		return
	}
	ctx := c.ctx
	if addr != "" {
		ctx = WithExcluded(ctx, addr)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.launched, c.cancelHedgeFn = true, cancel
	c.mu.Unlock()

	h := &c.hedge
	h.reply = c.replyType.New().Interface()
	err := c.s.next.invoke(ctx, c.method, c.req, h.reply, c.cc, c.inv, h.ownOptions(c.opts))
	c.mu.Lock()
	h.err = err
	// A hedge ended by the caller's giving up answered nothing: the
	// first attempt, ended the same way, decides.
	if c.winner == winnerNone && answered(err) && c.ctx.Err() == nil {
		c.winner = winnerHedge
		c.cancelFirst()
	}
	c.mu.Unlock()
}

// ownOptions returns opts with the options grpc-go writes results into
// (peer, header, trailer) pointing at h instead.
func (h *hedgeAttempt) ownOptions(opts []grpc.CallOption) []grpc.CallOption {
	out := make([]grpc.CallOption, len(opts))
	for i, o := range opts {
		switch o.(type) {
		case grpc.PeerCallOption:
			o = grpc.Peer(&h.peer)
		case grpc.HeaderCallOption:
			o = grpc.Header(&h.header)
		case grpc.TrailerCallOption:
			o = grpc.Trailer(&h.trailer)
		}
		out[i] = o
	}
	return out
}

// adoptHedge gives the caller the winning hedge's reply and results. Both
// attempts have ended.
func (c *hedgeCall) adoptHedge() {
	proto.Reset(c.reply)
	proto.Merge(c.reply, c.hedge.reply)
	for _, o := range c.opts {
		switch o := o.(type) {
		case grpc.PeerCallOption:
			*o.PeerAddr = c.hedge.peer
		case grpc.HeaderCallOption:
			*o.HeaderAddr = c.hedge.header
		case grpc.TrailerCallOption:
			*o.TrailerAddr = c.hedge.trailer
		}
	}
}

func (s *hedgeStage) count(method, outcome string) {
	if s.onHedge != nil {
		s.onHedge(method, outcome)
	}
}

// answered reports whether an attempt's result is the call's answer: a
// success, or an error about the request rather than the instance. An
// attempt that failed in a way another instance may not (the codes an
// idempotent call is retried on) leaves the answer to the other attempt.
func answered(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.ResourceExhausted, codes.Aborted, codes.Internal, codes.DeadlineExceeded:
		return false
	}
	return true
}

// Shape of latencyQuantile: buckets grow by 2^(1/4) (19%) from 64µs, so the
// 96 of them reach about 18 minutes.
const (
	latencyBase        = 64 * time.Microsecond
	latencyPerDoubling = 4
	latencyBuckets     = 96
	// latencyMinSamples: no percentile (so no hedging) before this many
	// calls are measured.
	latencyMinSamples = 20
	// latencyWindow: when more calls than this are counted, every count
	// is halved, so the percentile follows the recent calls.
	latencyWindow = 2000
	// latencyRecompute: the percentile is recomputed every this many calls.
	latencyRecompute = 16
	latencyQuantileQ = 0.95
)

// latencyQuantile estimates the 95th percentile of one method's recent
// call durations from a histogram with exponential buckets, halved now and
// then so that old calls fade. Reads are one atomic load.
type latencyQuantile struct {
	mu      sync.Mutex
	counts  [latencyBuckets]uint32
	total   int
	pending int          // calls since the last recompute
	value   atomic.Int64 // ns; 0 until latencyMinSamples calls
}

func latencyBucket(d time.Duration) int {
	if d <= latencyBase {
		return 0
	}
	i := int(math.Ceil(latencyPerDoubling * math.Log2(float64(d)/float64(latencyBase))))
	return min(i, latencyBuckets-1)
}

// latencyUpper returns the upper bound of bucket i.
func latencyUpper(i int) time.Duration {
	return time.Duration(float64(latencyBase) * math.Exp2(float64(i)/latencyPerDoubling))
}

func (q *latencyQuantile) observe(d time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.counts[latencyBucket(d)]++
	q.total++
	q.pending++
	if q.total > latencyWindow {
		q.total = 0
		for i := range q.counts {
			q.counts[i] /= 2
			q.total += int(q.counts[i])
		}
	}
	if q.total >= latencyMinSamples && (q.pending >= latencyRecompute || q.value.Load() == 0) {
		q.pending = 0
		rank := int(math.Ceil(latencyQuantileQ * float64(q.total)))
		seen := 0
		for i, n := range q.counts {
			if seen += int(n); seen >= rank {
				q.value.Store(int64(latencyUpper(i)))
				break
			}
		}
	}
}

// quantile returns the estimate, or 0 while too few calls were measured.
func (q *latencyQuantile) quantile() time.Duration { return time.Duration(q.value.Load()) }
