package serverchain

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/internal/testlog"
)

// fakeClock is a manually advanced clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// logBuffer captures slog output and mirrors it to t.Log.
type logBuffer struct {
	testlog.Buffer
	t *testing.T
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.t.Log(strings.TrimSpace(string(p)))
	return b.Buffer.Write(p)
}

func (b *logBuffer) Lines() []string {
	s := strings.TrimSpace(b.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func testLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	b := &logBuffer{t: t}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *fakeStream) Context() context.Context { return s.ctx }

func unaryInfo(method string) *grpc.UnaryServerInfo {
	return &grpc.UnaryServerInfo{FullMethod: method}
}

func streamInfo(method string) *grpc.StreamServerInfo {
	return &grpc.StreamServerInfo{FullMethod: method}
}

func okHandler(context.Context, any) (any, error) { return "ok", nil }

// callBoth runs ic's unary and stream forms with a handler returning herr
// and returns both errors.
func callBoth(ctx context.Context, ic Interceptor, method string, herr error) (unaryErr, streamErr error) {
	_, unaryErr = ic.Unary(ctx, nil, unaryInfo(method), func(context.Context, any) (any, error) { return nil, herr })
	streamErr = ic.Stream(nil, &fakeStream{ctx: ctx}, streamInfo(method), func(any, grpc.ServerStream) error { return herr })
	return unaryErr, streamErr
}

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("code = %v (err %v), want %v", got, err, want)
	}
}
