package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// DefaultProgressInterval is how often Run reports progress.
const DefaultProgressInterval = time.Second

// Config is one load: which method, with what request, how hard and for
// how long.
type Config struct {
	// Conns are the connections calls go through; caller i of Concurrency
	// uses Conns[i%len(Conns)]. Run does not close them.
	Conns []grpc.ClientConnInterface
	// Method is the unary method to call.
	Method protoreflect.MethodDescriptor
	// Request is sent on every call; its type is Method's input. Run only
	// reads it.
	Request proto.Message
	// Concurrency is the number of callers, each with one call in flight.
	Concurrency int
	// Requests stops the load after that many calls (0: no bound).
	Requests int64
	// Duration stops starting calls after that long (0: no bound); calls in
	// flight then still finish, and are counted apart from the QPS (see
	// Result.AfterWindow). Requests or Duration is required.
	Duration time.Duration
	// Rate caps the calls started per second over all callers (0: no cap).
	Rate float64
	// Timeout is each call's deadline (0: none).
	Timeout time.Duration
	// Metadata is sent with every call.
	Metadata metadata.MD
	// Progress, when set, is called every ProgressInterval while the load
	// runs, from a goroutine of Run's; it must not block for long.
	Progress func(Progress)
	// ProgressInterval defaults to DefaultProgressInterval.
	ProgressInterval time.Duration

	clock clock // nil: the wall clock
}

// Progress is how far a running load has come.
type Progress struct {
	Elapsed  time.Duration
	Requests int64 // calls finished
	Errors   int64 // of them, failed
	// QPS is the rate of finished calls since the previous report.
	QPS float64
}

// Result is what a load measured.
type Result struct {
	// Method is the full method name called ("/pkg.Service/Method").
	Method string
	// Elapsed runs from the first call's start to the last call's end.
	Elapsed time.Duration
	// Window is the time QPS is measured over: Duration when the load ran
	// that long, else Elapsed (Requests were all made, or ctx ended,
	// first). The calls in flight when Duration is over, which may take up
	// to Timeout to end, are not in it.
	Window time.Duration
	// Requests is the number of calls finished, successful or not.
	Requests int64
	// AfterWindow counts the calls of Requests that finished after the
	// Window: in flight when Duration was over. Their codes and latencies
	// are counted; QPS leaves them out.
	AfterWindow int64
	// Codes counts the finished calls by status code, OK included.
	Codes map[codes.Code]int64
	// Latency holds every finished call's latency, failed ones included.
	Latency *Histogram
	// Interrupted is set when ctx ended before the load was done; calls cut
	// short by it are not counted.
	Interrupted bool
}

// Errors returns the number of calls that failed.
func (r *Result) Errors() int64 { return r.Requests - r.Codes[codes.OK] }

// QPS returns the calls finished within the Window per second of it.
func (r *Result) QPS() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(r.Requests-r.AfterWindow) / r.Window.Seconds()
}

// Validate reports the first thing wrong with c, naming the setting.
func (c Config) Validate() error {
	switch {
	case len(c.Conns) == 0:
		return errors.New("no connection to send calls through")
	case c.Method == nil:
		return errors.New("no method to call")
	case c.Method.IsStreamingClient() || c.Method.IsStreamingServer():
		return fmt.Errorf("method %s is a streaming method: only unary methods can be loaded", c.Method.FullName())
	case c.Request == nil:
		return errors.New("no request message")
	case c.Request.ProtoReflect().Descriptor().FullName() != c.Method.Input().FullName():
		return fmt.Errorf("request is a %s, method %s takes a %s",
			c.Request.ProtoReflect().Descriptor().FullName(), c.Method.FullName(), c.Method.Input().FullName())
	case c.Concurrency < 1:
		return fmt.Errorf("concurrency %d: want at least 1 caller", c.Concurrency)
	case c.Requests < 0:
		return fmt.Errorf("requests %d: want a positive number, or 0 for no bound", c.Requests)
	case c.Duration < 0:
		return fmt.Errorf("duration %s: want a positive duration, or 0 for no bound", c.Duration)
	case c.Requests == 0 && c.Duration == 0:
		return errors.New("no bound: set a number of requests, a duration, or both")
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return fmt.Errorf("rate %g: want a positive number of calls per second, or 0 for no cap", c.Rate)
	case c.Timeout < 0:
		return fmt.Errorf("timeout %s: want a positive duration, or 0 for none", c.Timeout)
	case c.ProgressInterval < 0:
		return fmt.Errorf("progress interval %s: want a positive duration", c.ProgressInterval)
	}
	return nil
}

// FullMethod returns md's name as gRPC sends it: "/pkg.Service/Method".
func FullMethod(md protoreflect.MethodDescriptor) string {
	return "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
}

// run is the shared state of one load.
type run struct {
	cfg      Config
	method   string
	stop     chan struct{} // closed when Duration is over
	pace     *pacer        // nil without a rate
	issued   atomic.Int64
	finished atomic.Int64
	failed   atomic.Int64
	late     atomic.Int64 // finished after stop closed
}

// tally counts the calls of some callers. Callers share a few tallies
// (tallies), so memory stays bounded however many callers there are and
// their locks are rarely contended.
type tally struct {
	mu      sync.Mutex
	latency *Histogram
	codes   map[codes.Code]int64
}

func (t *tally) add(code codes.Code, took time.Duration) {
	t.mu.Lock()
	t.codes[code]++
	t.latency.Record(took)
	t.mu.Unlock()
}

// tallies returns the number of tallies for n callers: enough that the
// processors rarely wait for each other's lock.
func tallies(n int) int { return min(n, 4*runtime.GOMAXPROCS(0)) }

// Run sends calls until Requests calls were started, Duration is over or
// ctx ends, waits for the calls in flight, and returns what it measured.
// When ctx ends first the result holds the calls finished until then and
// is marked Interrupted; the error is only for a bad Config.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.clock == nil {
		cfg.clock = realClock{}
	}
	if cfg.ProgressInterval == 0 {
		cfg.ProgressInterval = DefaultProgressInterval
	}
	if len(cfg.Metadata) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, cfg.Metadata)
	}
	r := &run{cfg: cfg, method: FullMethod(cfg.Method), stop: make(chan struct{})}
	start := cfg.clock.Now()
	if cfg.Rate > 0 {
		r.pace = newPacer(cfg.clock, cfg.Rate)
	}
	if cfg.Duration > 0 {
		t := time.AfterFunc(cfg.Duration, func() { close(r.stop) })
		defer t.Stop()
	}

	ts := make([]*tally, tallies(cfg.Concurrency))
	for i := range ts {
		ts[i] = &tally{latency: NewHistogram(), codes: map[codes.Code]int64{}}
	}
	// Callers beyond the calls to make would make none.
	callers := cfg.Concurrency
	if cfg.Requests > 0 && cfg.Requests < int64(callers) {
		callers = int(cfg.Requests)
	}
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { r.call(ctx, cfg.Conns[i%len(cfg.Conns)], ts[i%len(ts)]) })
	}
	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	if cfg.Progress != nil {
		progressWG.Go(func() { r.report(start, progressDone) })
	}
	wg.Wait()
	elapsed := cfg.clock.Now().Sub(start)
	close(progressDone)
	progressWG.Wait()

	res := &Result{Method: r.method, Elapsed: elapsed, Window: elapsed, AfterWindow: r.late.Load(),
		Codes: map[codes.Code]int64{}, Latency: NewHistogram(), Interrupted: ctx.Err() != nil}
	if r.stopped() {
		res.Window = min(elapsed, cfg.Duration)
	}
	for _, t := range ts {
		res.Latency.Merge(t.latency)
		for code, n := range t.codes {
			res.Codes[code] += n
			res.Requests += n
		}
	}
	return res, nil
}

// call is one caller's loop: take a call from the budget, wait for its
// slot, send it, count it.
func (r *run) call(ctx context.Context, conn grpc.ClientConnInterface, t *tally) {
	reply := dynamicpb.NewMessage(r.cfg.Method.Output())
	for {
		select {
		case <-r.stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		if r.cfg.Requests > 0 && r.issued.Add(1) > r.cfg.Requests {
			return
		}
		if r.pace != nil && !r.pace.wait(ctx, r.stop) {
			return
		}
		callCtx, cancel := ctx, context.CancelFunc(nil)
		if r.cfg.Timeout > 0 {
			callCtx, cancel = context.WithTimeout(ctx, r.cfg.Timeout)
		}
		began := time.Now()
		err := conn.Invoke(callCtx, r.method, r.cfg.Request, reply)
		took := time.Since(began)
		if cancel != nil {
			cancel()
		}
		if err != nil && ctx.Err() != nil {
			return // cut short by the interrupt: not the service's answer
		}
		if r.stopped() {
			r.late.Add(1)
		}
		code := status.Code(err)
		t.add(code, took)
		r.finished.Add(1)
		if code != codes.OK {
			r.failed.Add(1)
		}
	}
}

// stopped reports whether Duration is over.
func (r *run) stopped() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// report calls Progress every ProgressInterval until done closes.
func (r *run) report(start time.Time, done <-chan struct{}) {
	t := time.NewTicker(r.cfg.ProgressInterval)
	defer t.Stop()
	last, lastAt := int64(0), start
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		now := r.cfg.clock.Now()
		n := r.finished.Load()
		qps := 0.0
		if d := now.Sub(lastAt); d > 0 {
			qps = float64(n-last) / d.Seconds()
		}
		r.cfg.Progress(Progress{Elapsed: now.Sub(start), Requests: n, Errors: r.failed.Load(), QPS: qps})
		last, lastAt = n, now
	}
}
