package balancer

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/rpc/clientchain"
)

// Tuning of [P2CEWMA].
const (
	// p2cDecay is the time constant of a SubConn's cost: with no new call
	// it falls to 1/e of its value in p2cDecay, whether or not the SubConn
	// is picked. It bounds how long one slow call, a slow spell or an error
	// keeps a SubConn from its share: a cost R times the others' is
	// forgotten in ln(R)×p2cDecay, 0.4 s for a 50× slower call. Finagle
	// and Linkerd use 10 s, which holds an instance back for most of a
	// minute after one slow call (a cold first call, a GC pause); 100 ms
	// lets equal instances share even a short burst of sequential calls,
	// and calls in flight (the other half of the load) still keep a slower
	// instance well below its peers (see the tests).
	p2cDecay = float64(100 * time.Millisecond)
	// p2cFailCost is the least cost a call that failed through the
	// instance's fault (see instanceFault) sets: an instance failing fast
	// must not look fast.
	p2cFailCost = float64(time.Second)
	// p2cMaxCost caps the cost errors drive up (each one doubles it), so
	// that a recovered instance is tried again soon after its last failure
	// even behind a run of errors: from the cap the cost falls to 10 ms in
	// about 7×p2cDecay.
	p2cMaxCost = float64(10 * time.Second)
)

// p2cEpoch anchors the default clock, which is monotonic.
var p2cEpoch = time.Now()

func monotonicNow() int64 { return int64(time.Since(p2cEpoch)) }

// p2cPickerBuilder builds [P2CEWMA] pickers; one per ClientConn.
//
// Each SubConn has a cost in nanoseconds, a peak-EWMA of its call durations
// (Finagle's PeakEwma):
//
//   - it decays toward zero with wall time, cost×exp(-Δt/100ms) after Δt
//     without a new sample, computed on every read, so a SubConn that is
//     not picked becomes cheaper until it is picked again and measured;
//   - a call that took longer than the decayed cost sets it (the peak);
//     a shorter one moves it toward the sample with weight 1-exp(-Δt/100ms),
//     Δt since the SubConn's previous sample;
//   - a call that failed through the instance's fault (Unavailable,
//     DeadlineExceeded, Internal, ResourceExhausted, DataLoss,
//     Unimplemented) counts as a sample of max(1 s, 2×max(duration,
//     cost)), at most 10 s, so failures push a SubConn away at once and
//     repeated ones push it further. Application errors (NotFound,
//     InvalidArgument, Unknown, ...) and cancellations are plain samples;
//   - a SubConn new to the picker (added, or reconnected) starts at the
//     median cost of the SubConns already there, neither penalised nor
//     favoured; the very first SubConns start at zero;
//   - calls in flight are evidence too: a SubConn costs at least the mean
//     age of its unfinished calls. Without it an instance whose calls
//     hang (its host cut off by a network that drops packets, a process
//     stopped) gives no sample, its cost decays toward zero, and it wins
//     every pick: every new call joins the hung ones until they time out.
//
// Streams (server-, client- or bidi-streaming methods, told apart by
// [streamMethods]) are no calls in this sense: a subscription or a watch
// lives for minutes, and its age says nothing of how soon the instance
// answers; counted in flight it would make the instance holding it look
// as slow as the stream is old, and every unary call would go elsewhere.
// A stream's pick is therefore left out of the calls in flight, both their
// number and their age (how many streams an instance holds says no more
// about its next answer than how long they have lived), and its end is no
// latency sample. Only a stream failing through the instance's fault
// counts, as a failed call that took no time (a stream's
// DeadlineExceeded is the caller's bound on its life, no fault). Hung
// streams are found by rpc.Dial's keepalive, as hung calls are.
//
// A pick draws two distinct SubConns at random and takes the one with the
// lower load, cost × (unary calls in flight from this ClientConn + 1);
// with one ready SubConn it takes that one.
//
// A SubConn's cost and the time of its last sample are two words, written
// under a per-SubConn lock when a call ends and read without one when
// picking: a pick racing a sample may see one word new and the other old,
// and misjudge that SubConn for that pick. Picks stay lock-free.
type p2cPickerBuilder struct {
	states  connStates[p2cConn]
	streams *streamMethods
	now     func() int64 // nanoseconds on a monotonic clock; tests set it
	intN    func(n int) int
}

func newP2CPickerBuilder() *p2cPickerBuilder {
	return &p2cPickerBuilder{streams: &streamMethods{}, now: monotonicNow, intN: rand.IntN}
}

func (b *p2cPickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	eps := readyEndpoints(info)
	if len(eps) == 0 {
		return errPickerNoSubConn
	}
	now := b.now()
	seed := medianCost(b.states.current(), now)
	conns := b.states.refresh(eps, func(ep endpoint) *p2cConn { return newP2CConn(ep, seed, now) })
	return &p2cPicker{conns: conns, streams: b.streams, now: b.now, intN: b.intN}
}

// medianCost returns the median of the conns' costs at now; 0 for none.
func medianCost(conns []*p2cConn, now int64) float64 {
	if len(conns) == 0 {
		return 0
	}
	costs := make([]float64, len(conns))
	for i, c := range conns {
		costs[i] = c.costAt(now)
	}
	slices.Sort(costs)
	return costs[len(costs)/2]
}

// p2cConn is the state of one SubConn, shared by successive pickers.
type p2cConn struct {
	sc       balancer.SubConn
	addr     string
	inflight atomic.Int64
	// started is the sum of the start times of the calls in flight
	// (wrapping past int64), so that their mean age is
	// (now·inflight - started)/inflight. A pick adds to it
	// before counting the call in flight and a call's end takes from it
	// after, so a load read in between sees the mean start later, not
	// earlier: a call is never taken for older than it is.
	started atomic.Int64
	mu      sync.Mutex    // serialises samples
	cost    atomic.Uint64 // math.Float64bits of the cost in ns at stamp
	stamp   atomic.Int64  // clock of the last sample
}

func newP2CConn(ep endpoint, cost float64, now int64) *p2cConn {
	c := &p2cConn{sc: ep.sc, addr: ep.addr}
	c.cost.Store(math.Float64bits(cost))
	c.stamp.Store(now)
	return c
}

// costAt returns the cost decayed to now.
func (c *p2cConn) costAt(now int64) float64 {
	cost := math.Float64frombits(c.cost.Load())
	if dt := now - c.stamp.Load(); dt > 0 {
		cost *= math.Exp(-float64(dt) / p2cDecay)
	}
	return cost
}

// load is what a pick compares: the cost, or the mean age of the unary
// calls in flight if that is more (at least 1 ns, so that calls in flight
// tell apart SubConns not measured yet), times the calls in flight plus
// one. Streams are not counted (see p2cPickerBuilder).
func (c *p2cConn) load(now int64) float64 {
	n := c.inflight.Load()
	cost := c.costAt(now)
	if n > 0 {
		// The sum of the ages, n·now - started, is exact in int64's
		// wrapping arithmetic even when started (n start times, each
		// the uptime) is not: 300 calls a year into a run pass 2^63.
		cost = max(cost, float64(now*n-c.started.Load())/float64(n))
	}
	return max(cost, 1) * float64(n+1)
}

// begin counts a call that starts at now in flight.
func (c *p2cConn) begin(now int64) {
	c.started.Add(now)
	c.inflight.Add(1)
}

// observe records a call that started at start and ended at now with err.
func (c *p2cConn) observe(now, start int64, err error) {
	c.inflight.Add(-1)
	c.started.Add(-start)
	c.sample(now, now-start, err)
}

// observeStream records a stream that ended at now with err: nothing,
// unless err is the instance's fault.
func (c *p2cConn) observeStream(now int64, err error) {
	if instanceFault(err) && status.Code(err) != codes.DeadlineExceeded {
		c.sample(now, 0, err)
	}
}

// sample moves the cost by a call that took d and ended at now with err.
func (c *p2cConn) sample(now, d int64, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	last := c.stamp.Load()
	decayed := c.costAt(now)
	sample := float64(max(d, 1))
	if instanceFault(err) {
		sample = min(max(p2cFailCost, 2*max(sample, decayed)), p2cMaxCost)
	}
	cost := sample
	if sample < decayed {
		w := math.Exp(-float64(max(now-last, 0)) / p2cDecay)
		cost = w*decayed + (1-w)*sample
	}
	c.cost.Store(math.Float64bits(cost))
	c.stamp.Store(max(now, last))
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
	conns   []*p2cConn
	streams *streamMethods
	now     func() int64
	intN    func(n int) int
}

func (p *p2cPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	now := p.now()
	conns := p.conns
	if ex := clientchain.ExcludedFrom(info.Ctx); len(ex) > 0 {
		conns = without(conns, ex) // a retry or a hedge: another instance
	}
	chosen := conns[0]
	if n := len(conns); n > 1 {
		i, j := p.intN(n), p.intN(n-1)
		if j >= i {
			j++
		}
		chosen = conns[i]
		if b := conns[j]; b.load(now) < chosen.load(now) {
			chosen = b
		}
	}
	note := clientchain.PickNoteFrom(info.Ctx)
	if note != nil {
		note.Record(&chosen.addr)
	}
	stream := p.streams.stream(info.FullMethodName)
	if !stream {
		chosen.begin(now)
	}
	call := p2cCallPool.Get().(*p2cCall)
	call.conn, call.start, call.stream, call.now, call.note = chosen, now, stream, p.now, note
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

// p2cCall carries a pick's start time, whether it is a stream's (and the
// call's pick note, which learns whether the attempt sent anything) to its
// Done. Calls are pooled, with Done bound once, so that picks do not
// allocate; grpc calls Done once per pick.
type p2cCall struct {
	conn   *p2cConn
	start  int64
	stream bool
	now    func() int64
	note   *clientchain.PickNote // nil: none
	done   func(balancer.DoneInfo)
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
	conn, start, stream, now, note := c.conn, c.start, c.stream, c.now, c.note
	if conn == nil {
		return // Done called twice; nothing left to record.
	}
	c.conn, c.now, c.note = nil, nil, nil
	p2cCallPool.Put(c)
	if stream {
		conn.observeStream(now(), info.Err)
	} else {
		conn.observe(now(), start, info.Err)
	}
	if note != nil {
		note.Finish(info.BytesSent)
	}
}
