package rpc

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/zrpcio/zrpc/internal/testlog"
)

type failingExporter struct{ calls int }

func (e *failingExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error {
	e.calls++
	return errors.New("connection refused")
}

func (e *failingExporter) Shutdown(context.Context) error { return nil }

// Export errors are logged, the first at once and then at most one a
// period, counting those not logged; none reaches the batcher, so
// OpenTelemetry's process-wide error handler prints nothing.
func TestExportErrorsAreLoggedRateLimited(t *testing.T) {
	var logs testlog.Buffer
	inner := &failingExporter{}
	e := &loggedExporter{log: slog.New(slog.NewTextHandler(&logs, nil)), every: time.Hour}
	if err := e.ExportSpans(context.Background(), nil); err != nil {
		t.Fatalf("before the exporter is set: %v", err)
	}
	e.set(inner)
	for range 50 {
		if err := e.ExportSpans(context.Background(), nil); err != nil {
			t.Fatalf("ExportSpans returned %v to the batcher", err)
		}
	}
	if inner.calls != 50 {
		t.Fatalf("inner exporter called %d times, want 50", inner.calls)
	}
	if n := strings.Count(logs.String(), "spans not exported"); n != 1 {
		t.Fatalf("%d log lines for 50 failed exports within the period, want 1:\n%s", n, logs.String())
	}
	// Once the period has passed, the next error is logged with the count
	// of those that were not.
	e.mu.Lock()
	e.lastLog = e.lastLog.Add(-2 * time.Hour)
	e.mu.Unlock()
	e.ExportSpans(context.Background(), nil)
	if out := logs.String(); strings.Count(out, "spans not exported") != 2 || !strings.Contains(out, "errors_not_logged=49") {
		t.Fatalf("after the period, want a second line counting 49 errors not logged:\n%s", out)
	}
}
