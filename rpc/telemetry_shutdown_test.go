package rpc

import (
	"context"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/teststack"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// spanBatcher is in the stack of a batch span processor's goroutine.
const spanBatcher = "go.opentelemetry.io/otel/sdk/trace.(*batchSpanProcessor).processQueue("

// TestTelemetryShutdownAfterItsContextEndsTheBatcher: a shutdown whose
// context has ended (Stop's, spent on draining calls) loses the queued
// spans but ends the batcher's goroutine all the same. The provider
// alone shuts nothing down then and counts itself shut down, so the
// goroutine ran for the life of the process.
func TestTelemetryShutdownAfterItsContextEndsTheBatcher(t *testing.T) {
	before := len(teststack.Goroutines("", spanBatcher))
	tel := newTelemetry(TelemetryConfig{Endpoint: "127.0.0.1:4317", Insecure: true}, "user.rpc", testlog.New(t, "telemetry"))
	ctx, cancel := context.WithCancel(context.Background())
	if err := tel.open(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := tel.shutdown(ctx); err == nil {
		t.Error("shutdown after its context ended reported no lost spans")
	}
	testwait.For(t, 10*time.Second, "the span batcher's goroutine to end", func() bool {
		return len(teststack.Goroutines("", spanBatcher)) <= before
	})
	if err := tel.shutdown(context.Background()); err != nil {
		t.Errorf("second shutdown: %v", err)
	}
}
