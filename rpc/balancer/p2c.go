package balancer

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"

	"github.com/zrpcio/zrpc/rpc/clientchain"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Tuning of [P2CEWMA]. The decay time and the penalty follow go-zero's p2c
// (which follows Finagle).
const (
	// p2cDecay is the time constant of the moving averages: a sample that
	// is p2cDecay old weighs 1/e of a fresh one.
	p2cDecay = float64(10 * time.Second)
	// p2cPenalty is the latency assumed for a SubConn with no finished call
	// yet, so that a new SubConn is not flooded before it has answered.
	p2cPenalty = float64(math.MaxInt32) // ns, about 2.1 s
	// p2cForcePick: a SubConn that loses a comparison but has not been
	// picked for this long is picked anyway, so that new SubConns and ones
	// that were slow or failing get probed and their scores refreshed.
	p2cForcePick = int64(time.Second)
	// p2cMinSampleWeight is the least weight a finished call has in the
	// success ratio, so that a burst of errors counts even at high call
	// rates where the time-based weight of one sample is tiny.
	p2cMinSampleWeight = 1.0 / 8
	// p2cMinSuccess bounds the error inflation of a score to 1/p2cMinSuccess.
	p2cMinSuccess = 0.01
	// p2cPickStamp: lastPick is rewritten at most this often, to keep picks
	// from writing a shared cache line every time.
	p2cPickStamp = int64(10 * time.Millisecond)
	// p2cNever is lastPick of a SubConn never picked: long ago.
	p2cNever = math.MinInt64 / 2
)

// p2cEpoch anchors the default clock, which is monotonic.
var p2cEpoch = time.Now()

func monotonicNow() int64 { return int64(time.Since(p2cEpoch)) }

// p2cPickerBuilder builds [P2CEWMA] pickers; one per ClientConn.
//
// Each SubConn has a score; lower is better:
//
//	score = latency × (inflight + 1) / max(success, 0.01)
//
// latency is a moving average of call durations, weighted by time: when a
// call ends after td since the SubConn's previous call ended, with
// w = exp(-td / 10s), latency = w×latency + (1-w)×duration. Until its first
// call ends a SubConn's latency is a 2.1 s penalty. inflight counts this
// ClientConn's unfinished calls on the SubConn. success is a moving average
// of 1 for each call that ended well and 0 for each that ended with a code
// that points at the instance (Unavailable, DeadlineExceeded, Internal,
// ResourceExhausted, DataLoss, Unimplemented); it weighs each call by
// max(1-w, 1/8), so a few errors in a row quickly multiply the score.
// Application errors (NotFound, InvalidArgument, Unknown, ...) and
// cancellations count as success.
//
// A pick draws two distinct SubConns at random and takes the one with the
// lower score; if the other has not been picked for a second, it takes that
// one instead, once, to refresh its stale score. With one ready SubConn it
// takes that one.
//
// Concurrent updates of one SubConn's averages may lose a sample; they are
// estimates and picks stay lock-free.
type p2cPickerBuilder struct {
	states connStates[p2cConn]
	now    func() int64 // nanoseconds on a monotonic clock; tests set it
}

func newP2CPickerBuilder() *p2cPickerBuilder { return &p2cPickerBuilder{now: monotonicNow} }

func (b *p2cPickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	eps := readyEndpoints(info)
	if len(eps) == 0 {
		return errPickerNoSubConn
	}
	return &p2cPicker{conns: b.states.refresh(eps, newP2CConn), now: b.now}
}

// p2cConn is the state of one SubConn, shared by successive pickers.
type p2cConn struct {
	sc       balancer.SubConn
	addr     string
	inflight atomic.Int64
	latency  atomic.Uint64 // math.Float64bits of the average in ns; 0 until a call ends
	success  atomic.Uint64 // math.Float64bits of the average in [0, 1]
	lastDone atomic.Int64  // clock when a call last ended
	lastPick atomic.Int64  // clock when last picked, within p2cPickStamp
}

func newP2CConn(ep endpoint) *p2cConn {
	c := &p2cConn{sc: ep.sc, addr: ep.addr}
	c.success.Store(math.Float64bits(1))
	c.lastPick.Store(p2cNever)
	return c
}

func (c *p2cConn) score() float64 {
	lat := math.Float64frombits(c.latency.Load())
	if lat == 0 {
		lat = p2cPenalty
	}
	succ := max(math.Float64frombits(c.success.Load()), p2cMinSuccess)
	return lat * float64(c.inflight.Load()+1) / succ
}

// observe records a call that ended at now after d nanoseconds with err.
func (c *p2cConn) observe(now, d int64, err error) {
	c.inflight.Add(-1)
	last := c.lastDone.Swap(now)
	prevLat := math.Float64frombits(c.latency.Load())
	sample := float64(max(d, 1)) // 0 would read as "no sample"
	lat, weight := sample, p2cMinSampleWeight
	if prevLat != 0 {
		w := math.Exp(-float64(max(now-last, 0)) / p2cDecay)
		lat = w*prevLat + (1-w)*sample
		weight = max(1-w, p2cMinSampleWeight)
	}
	c.latency.Store(math.Float64bits(lat))
	ok := 1.0
	if instanceFault(err) {
		ok = 0
	}
	succ := math.Float64frombits(c.success.Load())
	c.success.Store(math.Float64bits((1-weight)*succ + weight*ok))
}

// instanceFault reports whether err says more about the instance than about
// the request.
func instanceFault(err error) bool {
	if err == nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Internal,
		codes.ResourceExhausted, codes.DataLoss, codes.Unimplemented:
		return true
	}
	return false
}

// p2cPicker implements the pick described on p2cPickerBuilder.
type p2cPicker struct {
	conns []*p2cConn
	now   func() int64
}

func (p *p2cPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	now := p.now()
	conns := p.conns
	if ex := clientchain.ExcludedFrom(info.Ctx); len(ex) > 0 {
		conns = without(conns, ex) // a retry: never the same instance twice
	}
	chosen := conns[0]
	if n := len(conns); n > 1 {
		i, j := rand.IntN(n), rand.IntN(n-1)
		if j >= i {
			j++
		}
		a, b := conns[i], conns[j]
		if b.score() < a.score() {
			a, b = b, a
		}
		chosen = a
		if lp := b.lastPick.Load(); now-lp > p2cForcePick && b.lastPick.CompareAndSwap(lp, now) {
			chosen = b
		}
	}
	if now-chosen.lastPick.Load() > p2cPickStamp {
		chosen.lastPick.Store(now)
	}
	chosen.inflight.Add(1)
	call := p2cCallPool.Get().(*p2cCall)
	call.conn, call.start, call.now = chosen, now, p.now
	return balancer.PickResult{SubConn: chosen.sc, Done: call.done}, nil
}

// without returns conns minus those whose address is in excluded; all of
// them when every one is excluded (a call must go somewhere).
func without(conns []*p2cConn, excluded []string) []*p2cConn {
	out := make([]*p2cConn, 0, len(conns))
	for _, c := range conns {
		if !slices.Contains(excluded, c.addr) {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return conns
	}
	return out
}

// p2cCall carries a pick's start time to its Done. Calls are pooled, with
// Done bound once, so that picks do not allocate; grpc calls Done once per
// pick.
type p2cCall struct {
	conn  *p2cConn
	start int64
	now   func() int64
	done  func(balancer.DoneInfo)
}

var p2cCallPool sync.Pool

func init() {
	p2cCallPool.New = func() any {
		c := &p2cCall{}
		c.done = c.finish
		return c
	}
}

func (c *p2cCall) finish(info balancer.DoneInfo) {
	conn, start, now := c.conn, c.start, c.now
	if conn == nil {
		return // Done called twice; nothing left to record.
	}
	c.conn, c.now = nil, nil
	p2cCallPool.Put(c)
	end := now()
	conn.observe(end, end-start, info.Err)
}
