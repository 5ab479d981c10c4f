package serverchain

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Shedding defaults; see Shed.
const (
	DefaultShedWindow        = 5 * time.Second
	DefaultShedBuckets       = 50
	DefaultShedFloor         = 32
	DefaultShedLatencyFactor = 2.0
	shedEWMADecay            = 0.9
)

var errShed = status.Error(codes.ResourceExhausted, "server overloaded, call shed")

// ShedOption adjusts Shed.
type ShedOption func(*shedder)

// WithShedClock sets the clock (for tests).
func WithShedClock(now func() time.Time) ShedOption {
	return func(s *shedder) { s.now = now }
}

// WithShedWindow sets the history window and how many buckets it is split
// into (default 5s in 50 buckets).
func WithShedWindow(window time.Duration, buckets int) ShedOption {
	return func(s *shedder) {
		if window > 0 && buckets > 0 {
			s.bucketDur = window / time.Duration(buckets)
			s.buckets = make([]shedBucket, buckets)
		}
	}
}

// WithShedFloor sets the in-flight count below which adaptive shedding
// never rejects (default 32).
func WithShedFloor(n int) ShedOption {
	return func(s *shedder) { s.floor = int64(max(n, 1)) }
}

// WithShedLatencyFactor sets how far the latency EWMA must rise above the
// window's minimum latency before adaptive shedding rejects (default 2);
// f <= 0 drops the latency condition.
func WithShedLatencyFactor(f float64) ShedOption {
	return func(s *shedder) { s.latencyFactor = f }
}

// Shed rejects calls with codes.ResourceExhausted when this process is
// overloaded. The algorithm is go-zero's adaptive shedder (itself after
// BBR) with the machine-CPU input replaced by this process's own latency:
//
//   - in-flight calls are counted with an atomic counter;
//   - completed calls are recorded in a rolling window (default 5s in 50
//     buckets): per bucket, the number of calls that passed and their total
//     latency;
//   - from the window, excluding the current bucket, maxPass is the largest
//     per-second pass rate of any bucket and minRT the smallest per-bucket
//     mean latency; by Little's law the process can hold
//     limit = ceil(maxPass * minRT) calls in flight without queueing;
//   - an EWMA of latency (decay 0.9 per call) stands in for go-zero's CPU
//     signal: the process counts as overloaded when the EWMA exceeds
//     latencyFactor * minRT, i.e. calls are queueing.
//
// A call is rejected when in-flight (counting it) exceeds maxInFlight
// (a hard cap; <= 0 means none), or when in-flight exceeds
// max(floor, limit) while overloaded. With no completed history the limit is
// unbounded, so a cold process only applies the hard cap. Bucket resets
// race with concurrent adds and may drop a sample; the limit is an estimate.
//
// Streams count toward the hard cap only: a stream lasts as long as its
// client keeps it open (a watch for hours), which says nothing of how
// long the process takes to serve a call, so its lifetime is no latency
// sample and its being open is no queued work. Health checks
// (grpc.health.v1.Health) are never shed: a load balancer or agent that
// found the health check refused would take an overloaded but working
// instance out, moving its load onto the others.
func Shed(maxInFlight int, opts ...ShedOption) Interceptor {
	return newShedder(maxInFlight, opts...).interceptor()
}

func (s *shedder) interceptor() Interceptor {
	return Interceptor{
		Unary: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if unlimited(info.FullMethod) {
				return handler(ctx, req)
			}
			start, err := s.begin()
			if err != nil {
				return nil, err
			}
			defer s.end(start)
			return handler(ctx, req)
		},
		Stream: func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if unlimited(info.FullMethod) {
				return handler(srv, ss)
			}
			if err := s.beginStream(); err != nil {
				return err
			}
			defer s.endStream()
			return handler(srv, ss)
		},
	}
}

type shedder struct {
	maxInFlight   int64
	floor         int64
	latencyFactor float64
	bucketDur     time.Duration
	buckets       []shedBucket
	now           func() time.Time
	origin        time.Time

	inFlight atomic.Int64  // unary calls
	streams  atomic.Int64  // open streams
	ewmaRT   atomic.Uint64 // float64 bits, nanoseconds; 0 = no sample yet
}

type shedBucket struct {
	epoch  atomic.Int64 // window-relative bucket number it holds; -1 = none
	passes atomic.Int64
	rtSum  atomic.Int64 // nanoseconds
}

func newShedder(maxInFlight int, opts ...ShedOption) *shedder {
	s := &shedder{
		maxInFlight:   int64(max(maxInFlight, 0)),
		floor:         DefaultShedFloor,
		latencyFactor: DefaultShedLatencyFactor,
		now:           time.Now,
	}
	WithShedWindow(DefaultShedWindow, DefaultShedBuckets)(s)
	for _, o := range opts {
		o(s)
	}
	for i := range s.buckets {
		s.buckets[i].epoch.Store(-1)
	}
	s.origin = s.now()
	return s
}

func (s *shedder) epoch(now time.Time) int64 { return int64(now.Sub(s.origin) / s.bucketDur) }

// begin admits a call or returns errShed; an admitted call must call end.
func (s *shedder) begin() (time.Time, error) {
	now := s.now()
	return now, s.beginAt(now)
}

// beginAt is begin for a call that started at now.
func (s *shedder) beginAt(now time.Time) error {
	n := s.inFlight.Add(1)
	if s.maxInFlight > 0 && n+s.streams.Load() > s.maxInFlight {
		s.inFlight.Add(-1)
		return errShed
	}
	if n > s.floor && s.overloaded(now, n) {
		s.inFlight.Add(-1)
		return errShed
	}
	return nil
}

// beginStream admits a stream under the hard cap or returns errShed; an
// admitted stream must call endStream.
func (s *shedder) beginStream() error {
	n := s.streams.Add(1)
	if s.maxInFlight > 0 && n+s.inFlight.Load() > s.maxInFlight {
		s.streams.Add(-1)
		return errShed
	}
	return nil
}

func (s *shedder) endStream() { s.streams.Add(-1) }

func (s *shedder) end(start time.Time) { s.endAt(start, s.now()) }

// endAt ends a call admitted at start that ended at now.
func (s *shedder) endAt(start, now time.Time) {
	s.inFlight.Add(-1)
	rt := max(now.Sub(start), 0)
	s.record(now, rt)
	for {
		old := s.ewmaRT.Load()
		next := float64(rt)
		if old != 0 {
			next = math.Float64frombits(old)*shedEWMADecay + float64(rt)*(1-shedEWMADecay)
		}
		if s.ewmaRT.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}

func (s *shedder) record(now time.Time, rt time.Duration) {
	e := s.epoch(now)
	b := &s.buckets[e%int64(len(s.buckets))]
	for {
		old := b.epoch.Load()
		if old == e {
			break
		}
		if old > e {
			return // a stale sample for a bucket already reused
		}
		if b.epoch.CompareAndSwap(old, e) {
			b.passes.Store(0)
			b.rtSum.Store(0)
			break
		}
	}
	b.passes.Add(1)
	b.rtSum.Add(int64(rt))
}

// limit returns max(floor, maxPass*minRT) from the completed buckets of the
// window, and minRT; with no history it returns math.MaxInt64 and 0.
func (s *shedder) limit(now time.Time) (int64, time.Duration) {
	cur := s.epoch(now)
	var maxPass int64
	minRT := time.Duration(math.MaxInt64)
	for i := range s.buckets {
		b := &s.buckets[i]
		e := b.epoch.Load()
		if e >= cur || e < cur-int64(len(s.buckets)) {
			continue // current (partial) or stale
		}
		p := b.passes.Load()
		if p == 0 {
			continue
		}
		maxPass = max(maxPass, p)
		minRT = min(minRT, time.Duration(b.rtSum.Load()/p))
	}
	if maxPass == 0 {
		return math.MaxInt64, 0
	}
	// passes per second * minRT seconds = maxPass/bucketDur * minRT.
	l := int64(math.Ceil(float64(maxPass) * float64(minRT) / float64(s.bucketDur)))
	return max(l, s.floor), minRT
}

func (s *shedder) overloaded(now time.Time, inFlight int64) bool {
	limit, minRT := s.limit(now)
	if inFlight <= limit {
		return false
	}
	if s.latencyFactor <= 0 {
		return true
	}
	ewma := math.Float64frombits(s.ewmaRT.Load())
	return ewma > s.latencyFactor*float64(minRT)
}
