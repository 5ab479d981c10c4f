package clientchain

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/zrpcio/zrpc/internal/testwait"
)

const hedgedMethod = "/kv.Store/Get"

// textAddr is a net.Addr that is its own text.
type textAddr string

func (a textAddr) Network() string { return "tcp" }
func (a textAddr) String() string  { return string(a) }

// hedgeInstance answers an attempt: answer runs on the attempt's goroutine
// and returns its error; a nil error makes the reply the instance's address.
type hedgeInstance struct {
	addr   string
	answer func(ctx context.Context) error
}

// blockUntilCancelled is an instance that never answers by itself.
func blockUntilCancelled(ctx context.Context) error {
	<-ctx.Done()
	return status.FromContextError(ctx.Err()).Err()
}

func answerNow(context.Context) error { return nil }

// hedgeCluster stands in for a balancer and its instances: an attempt goes
// to the first instance its context does not exclude, the pick is noted as
// rpc/balancer does, and the attempt's context and instance are recorded.
type hedgeCluster struct {
	instances []hedgeInstance
	mu        sync.Mutex
	attempts  []hedgeRecord
}

type hedgeRecord struct {
	addr string
	ctx  context.Context
}

func (c *hedgeCluster) invoke(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
	inst := c.instances[len(c.instances)-1]
	for _, in := range c.instances {
		if !slices.Contains(ExcludedFrom(ctx), in.addr) {
			inst = in
			break
		}
	}
	if note := PickNoteFrom(ctx); note != nil {
		note.Record(&inst.addr)
	}
	c.mu.Lock()
	c.attempts = append(c.attempts, hedgeRecord{addr: inst.addr, ctx: ctx})
	c.mu.Unlock()
	err := inst.answer(ctx)
	for _, o := range opts {
		if p, ok := o.(grpc.PeerCallOption); ok {
			*p.PeerAddr = peer.Peer{Addr: textAddr(inst.addr)}
		}
	}
	if err == nil {
		reply.(*wrapperspb.StringValue).Value = inst.addr
	}
	return err
}

func (c *hedgeCluster) records() []hedgeRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.attempts)
}

// outcomes records the stage's hedge outcomes.
type outcomes struct {
	mu   sync.Mutex
	list []string
	hook func(outcome string) // called after recording, if set
}

func (o *outcomes) record(_, outcome string) {
	o.mu.Lock()
	o.list = append(o.list, outcome)
	hook := o.hook
	o.mu.Unlock()
	if hook != nil {
		hook(outcome)
	}
}

func (o *outcomes) get() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.list)
}

// warmHedgeStage returns a stage hedging hedgedMethod after 1 ms, whose
// latency estimate has seen enough 1 ms calls to hedge.
// hedgeTestDelay is the warm stage's hedge delay. A hedge excludes the
// instance the first attempt picked; on a stage that has not yet seen a
// pick noted (as the warm stage), one that fires before the first attempt
// has even picked (its goroutine preempted that long, as on a loaded
// machine with the race detector) goes anywhere, and the tests that need
// it elsewhere would wait for ever: 1 ms hung CI once.
const hedgeTestDelay = 50 * time.Millisecond

func warmHedgeStage(t *testing.T) (*hedgeStage, *outcomes) {
	t.Helper()
	s := newHedgeStage(HedgeConfig{Methods: []string{hedgedMethod}, MinDelay: hedgeTestDelay}, []string{hedgedMethod}, invokerStage{})
	for range latencyMinSamples {
		s.methods[hedgedMethod].observe(time.Millisecond)
	}
	o := &outcomes{}
	s.onHedge = o.record
	return s, o
}

func TestHedgeAnswersFromAnotherInstanceAndCancelsTheSlowOne(t *testing.T) {
	s, o := warmHedgeStage(t)
	cluster := &hedgeCluster{instances: []hedgeInstance{
		{addr: "10.0.0.1:1", answer: blockUntilCancelled},
		{addr: "10.0.0.2:1", answer: answerNow},
	}}
	var p peer.Peer
	reply := new(wrapperspb.StringValue)
	err := interceptor(s)(context.Background(), hedgedMethod, nil, reply, nil, cluster.invoke, grpc.Peer(&p))
	if err != nil {
		t.Fatalf("hedged call: %v", err)
	}
	if reply.Value != "10.0.0.2:1" {
		t.Fatalf("reply from %q, want the fast instance 10.0.0.2:1", reply.Value)
	}
	if p.Addr == nil || p.Addr.String() != "10.0.0.2:1" {
		t.Fatalf("peer %v, want the instance that answered", p.Addr)
	}
	recs := cluster.records()
	if len(recs) != 2 || recs[0].addr != "10.0.0.1:1" || recs[1].addr != "10.0.0.2:1" {
		t.Fatalf("attempts %v, want the slow instance then the fast one", recs)
	}
	if recs[0].ctx.Err() == nil {
		t.Fatal("the slow attempt's context is still live after the hedge answered")
	}
	if got := o.get(); !slices.Equal(got, []string{hedgeWon}) {
		t.Fatalf("outcomes %v, want [won]", got)
	}
}

// With a balancer that notes its picks (learnt from an earlier call), a
// hedge due while the first attempt has not picked an instance yet (it
// waits for one to be ready) waits for that pick and then goes to another
// instance, instead of going out with nothing to avoid and landing where
// the first attempt will.
func TestHedgeWaitsForTheFirstPickToGoElsewhere(t *testing.T) {
	s, o := warmHedgeStage(t)
	fast := &hedgeCluster{instances: []hedgeInstance{{addr: "10.0.0.2:1", answer: answerNow}}}
	if err := interceptor(s)(context.Background(), hedgedMethod, nil, new(wrapperspb.StringValue), nil, fast.invoke); err != nil {
		t.Fatalf("the call that shows the balancer notes picks: %v", err)
	}
	if !s.notesPicks.Load() {
		t.Fatal("a call whose pick was noted did not teach the stage that the balancer notes picks")
	}

	picking := make(chan struct{}) // closed to let the first attempt pick
	cluster := &hedgeCluster{instances: []hedgeInstance{
		{addr: "10.0.0.1:1", answer: blockUntilCancelled},
		{addr: "10.0.0.2:1", answer: answerNow},
	}}
	first := true
	slowPick := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
		cluster.mu.Lock()
		isFirst := first
		first = false
		cluster.mu.Unlock()
		if isFirst {
			select {
			case <-picking:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return cluster.invoke(ctx, method, req, reply, cc, opts...)
	}
	time.AfterFunc(3*hedgeTestDelay, func() { close(picking) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply := new(wrapperspb.StringValue)
	if err := interceptor(s)(ctx, hedgedMethod, nil, reply, nil, slowPick); err != nil {
		t.Fatalf("hedged call: %v", err)
	}
	if reply.Value != "10.0.0.2:1" {
		t.Fatalf("reply from %q, want the hedge's instance 10.0.0.2:1", reply.Value)
	}
	recs := cluster.records()
	if len(recs) != 2 || recs[0].addr != "10.0.0.1:1" || recs[1].addr != "10.0.0.2:1" {
		t.Fatalf("attempts %v, want the first attempt on 10.0.0.1:1 and the hedge elsewhere", recs)
	}
	if got := o.get(); !slices.Equal(got, []string{hedgeWon}) {
		t.Fatalf("outcomes %v, want [won]", got)
	}
}

func TestHedgeLosesWhenTheFirstAttemptAnswersFirst(t *testing.T) {
	s, o := warmHedgeStage(t)
	hedgeStarted := make(chan struct{})
	cluster := &hedgeCluster{instances: []hedgeInstance{
		{addr: "10.0.0.1:1", answer: func(ctx context.Context) error {
			select {
			case <-hedgeStarted:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(10 * time.Second):
				return status.Error(codes.Internal, "no hedge reached 10.0.0.2:1")
			}
		}},
		{addr: "10.0.0.2:1", answer: func(ctx context.Context) error {
			close(hedgeStarted)
			return blockUntilCancelled(ctx)
		}},
	}}
	reply := new(wrapperspb.StringValue)
	if err := interceptor(s)(context.Background(), hedgedMethod, nil, reply, nil, cluster.invoke); err != nil {
		t.Fatalf("hedged call: %v", err)
	}
	if reply.Value != "10.0.0.1:1" {
		t.Fatalf("reply from %q, want the first attempt's instance", reply.Value)
	}
	recs := cluster.records()
	if len(recs) != 2 || recs[1].ctx.Err() == nil {
		t.Fatalf("attempts %v: want a hedge, cancelled once the first attempt answered", recs)
	}
	if got := o.get(); !slices.Equal(got, []string{hedgeLost}) {
		t.Fatalf("outcomes %v, want [lost]", got)
	}
}

// An attempt that fails on its instance (Unavailable, ...) does not end a
// hedged call while the other attempt may still answer.
func TestHedgeFailedAttemptLeavesTheAnswerToTheOther(t *testing.T) {
	s, o := warmHedgeStage(t)
	hedgeStarted := make(chan struct{})
	cluster := &hedgeCluster{instances: []hedgeInstance{
		{addr: "10.0.0.1:1", answer: func(ctx context.Context) error {
			select {
			case <-hedgeStarted:
			case <-time.After(10 * time.Second):
				return status.Error(codes.Internal, "no hedge reached 10.0.0.2:1")
			}
			return status.Error(codes.Unavailable, "connection reset")
		}},
		{addr: "10.0.0.2:1", answer: func(ctx context.Context) error {
			close(hedgeStarted)
			return nil
		}},
	}}
	reply := new(wrapperspb.StringValue)
	if err := interceptor(s)(context.Background(), hedgedMethod, nil, reply, nil, cluster.invoke); err != nil {
		t.Fatalf("hedged call: %v", err)
	}
	if reply.Value != "10.0.0.2:1" {
		t.Fatalf("reply from %q, want the hedge's instance", reply.Value)
	}
	if got := o.get(); !slices.Equal(got, []string{hedgeWon}) {
		t.Fatalf("outcomes %v, want [won]", got)
	}
}

func TestHedgeNotSentWhenTheBudgetIsEmpty(t *testing.T) {
	s, o := warmHedgeStage(t)
	s.budget.milli.Store(0)
	refused := make(chan struct{})
	o.hook = func(outcome string) {
		if outcome == hedgeNoBudget {
			close(refused)
		}
	}
	cluster := &hedgeCluster{instances: []hedgeInstance{
		{addr: "10.0.0.1:1", answer: func(ctx context.Context) error {
			<-refused // answer only once the hedge was due and refused
			return nil
		}},
		{addr: "10.0.0.2:1", answer: answerNow},
	}}
	reply := new(wrapperspb.StringValue)
	if err := interceptor(s)(context.Background(), hedgedMethod, nil, reply, nil, cluster.invoke); err != nil {
		t.Fatalf("call: %v", err)
	}
	if recs := cluster.records(); len(recs) != 1 {
		t.Fatalf("%d attempts with an empty budget, want 1: %v", len(recs), recs)
	}
	if got := o.get(); !slices.Equal(got, []string{hedgeNoBudget}) {
		t.Fatalf("outcomes %v, want [no_budget]", got)
	}
}

func TestHedgeEndsAtTheCallersDeadline(t *testing.T) {
	s, o := warmHedgeStage(t)
	cluster := &hedgeCluster{instances: []hedgeInstance{
		{addr: "10.0.0.1:1", answer: blockUntilCancelled},
		{addr: "10.0.0.2:1", answer: blockUntilCancelled},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := interceptor(s)(ctx, hedgedMethod, nil, new(wrapperspb.StringValue), nil, cluster.invoke)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err %v, want DeadlineExceeded", err)
	}
	for _, r := range cluster.records() {
		if r.ctx.Err() == nil {
			t.Fatalf("attempt on %s still live after the call returned", r.addr)
		}
	}
	if got := o.get(); len(got) > 1 || (len(got) == 1 && got[0] != hedgeFailed) {
		t.Fatalf("outcomes %v, want [failed] or none", got)
	}
}

// Only methods configured for hedging (and so idempotent) ever get a second
// attempt, and the chain counts hedges in zrpc_client_hedges_total.
func TestChainHedgesOnlyHedgedMethods(t *testing.T) {
	const other = "/kv.Store/Put"
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Timeout = 0
	cfg.Registerer = reg
	cfg.Retry.Idempotent = []string{hedgedMethod}
	cfg.Hedge = HedgeConfig{Idempotent: true, MinDelay: time.Millisecond}
	unary, _, err := NewChain(cfg)
	if err != nil {
		t.Fatal(err)
	}
	warm := &hedgeCluster{instances: []hedgeInstance{{addr: "10.0.0.1:1", answer: answerNow}}}
	for range latencyMinSamples {
		for _, m := range []string{hedgedMethod, other} {
			if err := unary(context.Background(), m, nil, new(wrapperspb.StringValue), nil, warm.invoke); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The first instance answers when cancelled or after slow: far later
	// than the hedge delay.
	for _, tc := range []struct {
		method   string
		slow     time.Duration
		attempts int
	}{{other, 100 * time.Millisecond, 1}, {hedgedMethod, time.Minute, 2}} {
		cluster := &hedgeCluster{instances: []hedgeInstance{
			{addr: "10.0.0.1:1", answer: func(ctx context.Context) error {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(tc.slow):
					return nil
				}
			}},
			{addr: "10.0.0.2:1", answer: answerNow},
		}}
		if err := unary(context.Background(), tc.method, nil, new(wrapperspb.StringValue), nil, cluster.invoke); err != nil {
			t.Fatalf("%s: %v", tc.method, err)
		}
		if got := len(cluster.records()); got != tc.attempts {
			t.Fatalf("%s: %d attempts, want %d", tc.method, got, tc.attempts)
		}
	}
	got := gathered(t, reg, "zrpc_client_hedges_total")
	if got["method="+hedgedMethod+",outcome=won"] != 1 || len(got) != 1 {
		t.Fatalf("zrpc_client_hedges_total %v, want one hedge of %s won", got, hedgedMethod)
	}
}

func TestHedgeConfigRejectsMethodsNotIdempotent(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Retry.Idempotent = []string{hedgedMethod}
	cfg.Hedge = HedgeConfig{Methods: []string{hedgedMethod, "/kv.Store/Put"}}
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), `"/kv.Store/Put" is not idempotent`) {
		t.Fatalf("Validate = %v, want an error naming /kv.Store/Put", err)
	}
	cfg.Hedge = HedgeConfig{Methods: []string{hedgedMethod}, MinDelay: -time.Millisecond}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "MinDelay") {
		t.Fatalf("Validate = %v, want an error naming MinDelay", err)
	}
	cfg.Hedge.MinDelay = 0
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate of a hedged idempotent method: %v", err)
	}
}

func TestHedgeWaitsForEnoughCallsToKnowTheMethodsLatency(t *testing.T) {
	s := newHedgeStage(HedgeConfig{Methods: []string{hedgedMethod}, MinDelay: time.Millisecond}, []string{hedgedMethod}, invokerStage{})
	cluster := &hedgeCluster{instances: []hedgeInstance{
		{addr: "10.0.0.1:1", answer: func(context.Context) error { time.Sleep(5 * time.Millisecond); return nil }},
		{addr: "10.0.0.2:1", answer: answerNow},
	}}
	for range latencyMinSamples - 1 {
		if err := interceptor(s)(context.Background(), hedgedMethod, nil, new(wrapperspb.StringValue), nil, cluster.invoke); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(cluster.records()); n != latencyMinSamples-1 {
		t.Fatalf("%d attempts for %d calls before the latency is known, want one each", n, latencyMinSamples-1)
	}
}

func TestLatencyQuantileTracksThe95thPercentile(t *testing.T) {
	var q latencyQuantile
	for range latencyMinSamples - 1 {
		q.observe(time.Millisecond)
	}
	if got := q.quantile(); got != 0 {
		t.Fatalf("estimate %v from %d calls, want none yet", got, latencyMinSamples-1)
	}
	for i := range 1000 {
		d := time.Millisecond
		if i%100 < 3 { // 3% slow: the 95th percentile is fast
			d = 100 * time.Millisecond
		}
		q.observe(d)
	}
	if got := q.quantile(); got < time.Millisecond || got > 1200*time.Microsecond {
		t.Fatalf("95th percentile %v with 3%% of calls at 100ms, want about 1ms", got)
	}
	for i := range 5000 {
		d := time.Millisecond
		if i%100 < 10 { // now 10% slow: the old calls fade
			d = 100 * time.Millisecond
		}
		q.observe(d)
	}
	if got := q.quantile(); got < 100*time.Millisecond || got > 120*time.Millisecond {
		t.Fatalf("95th percentile %v with 10%% of calls at 100ms, want about 100ms", got)
	}
}

// A caller that gives up while both attempts are out ends them both: the
// hedge did not answer first, whichever attempt returns first.
func TestHedgeCancelledByTheCallerDidNotWin(t *testing.T) {
	s, o := warmHedgeStage(t)
	hedgeEnded := make(chan struct{})
	cluster := &hedgeCluster{instances: []hedgeInstance{
		{addr: "10.0.0.1:1", answer: func(ctx context.Context) error {
			err := blockUntilCancelled(ctx)
			<-hedgeEnded // the hedge returns first
			return err
		}},
		{addr: "10.0.0.2:1", answer: func(ctx context.Context) error {
			defer close(hedgeEnded)
			return blockUntilCancelled(ctx)
		}},
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		testwait.Until(10*time.Second, func() bool { return len(cluster.records()) == 2 }) // the hedge is out
		cancel()
	}()
	err := interceptor(s)(ctx, hedgedMethod, nil, new(wrapperspb.StringValue), nil, cluster.invoke)
	if status.Code(err) != codes.Canceled || len(cluster.records()) != 2 {
		t.Fatalf("err %v after %d attempts, want Canceled after 2", err, len(cluster.records()))
	}
	if got := o.get(); !slices.Equal(got, []string{hedgeFailed}) {
		t.Fatalf("outcomes %v, want [failed]: the hedge was cancelled, it answered nothing", got)
	}
}
