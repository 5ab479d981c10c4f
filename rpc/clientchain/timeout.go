package clientchain

import (
	"context"
	"time"

	"google.golang.org/grpc"
)

// DefaultTimeout bounds each unary attempt unless configured otherwise.
const DefaultTimeout = 2 * time.Second

// Timeout returns an interceptor that gives each call a deadline d from now,
// unless the caller's deadline is sooner: it never extends one. d <= 0
// disables it. It uses only the context (no goroutine, no extra timer beyond
// the context's own).
func Timeout(d time.Duration) grpc.UnaryClientInterceptor {
	return TimeoutPerMethod(d, nil)
}

// TimeoutPerMethod is [Timeout] with overrides by full method name
// ("/pkg.Service/Method"); an override <= 0 means no timeout for that method.
func TimeoutPerMethod(d time.Duration, perMethod map[string]time.Duration) grpc.UnaryClientInterceptor {
	return interceptor(newTimeoutStage(d, perMethod, invokerStage{}))
}

// TimeoutStream bounds the whole life of a stream, from its start until
// RecvMsg returns an error, to d (or the per-method override). Streams are
// often long-lived (watches), so the default chain sets no stream timeout
// unless Config.StreamTimeout or a per-method override asks for one.
func TimeoutStream(d time.Duration, perMethod map[string]time.Duration) grpc.StreamClientInterceptor {
	t := newTimeoutStage(d, perMethod, nil)
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		d := t.timeout(method)
		if !shortens(ctx, d) {
			return streamer(ctx, desc, cc, method, opts...)
		}
		ctx, cancel := context.WithTimeout(ctx, d)
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			cancel()
			return nil, err
		}
		return &endWatchStream{ClientStream: cs, onEnd: func(error) { cancel() }}, nil
	}
}

type timeoutStage struct {
	d         time.Duration
	perMethod map[string]time.Duration
	next      unaryStage
}

func newTimeoutStage(d time.Duration, perMethod map[string]time.Duration, next unaryStage) *timeoutStage {
	m := make(map[string]time.Duration, len(perMethod))
	for k, v := range perMethod {
		m[k] = v
	}
	return &timeoutStage{d: d, perMethod: m, next: next}
}

func (s *timeoutStage) timeout(method string) time.Duration {
	if d, ok := s.perMethod[method]; ok {
		return d
	}
	return s.d
}

// shortens reports whether a timeout d would end before ctx's deadline.
func shortens(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return false
	}
	dl, ok := ctx.Deadline()
	return !ok || time.Until(dl) > d
}

func (s *timeoutStage) invoke(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts []grpc.CallOption) error {
	d := s.timeout(method)
	if !shortens(ctx, d) {
		return s.next.invoke(ctx, method, req, reply, cc, inv, opts)
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return s.next.invoke(ctx, method, req, reply, cc, inv, opts)
}
