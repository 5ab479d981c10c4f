package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/testwait"
)

// TestMeasureStopsWhenInterrupted: Ctrl-C (ctx) ends a round at its next
// question instead of sending the rest at the rate, whatever it is.
func TestMeasureStopsWhenInterrupted(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	done := make(chan error, 1)
	go func() {
		_, err := measure(ctx, config{rate: 1, queries: 3600}, silent.LocalAddr().String())
		done <- err
	}()
	var got error
	testwait.For(t, 10*time.Second, "an interrupted round to return", func() bool {
		select {
		case got = <-done:
			return true
		default:
			return false
		}
	})
	if !errors.Is(got, context.Canceled) {
		t.Fatalf("interrupted round: %v, want context.Canceled", got)
	}
}

// TestReportMedianOfAnEvenCount: over two rounds the median is the mean
// of the two, as in the other benchmarks' tables.
func TestReportMedianOfAnEvenCount(t *testing.T) {
	cfg := config{bins: []binary{{"new", "zrpcd"}}, reps: 2, rate: 1, queries: 1, instances: 1}
	results := map[string][]result{"new": {
		{sentPerSec: 100, p50: time.Millisecond, p99: time.Millisecond, p999: time.Millisecond},
		{sentPerSec: 300, p50: 3 * time.Millisecond, p99: 3 * time.Millisecond, p999: 3 * time.Millisecond, lost: 2},
	}}
	var b bytes.Buffer
	report(&b, cfg, results)
	want := "| new | 200 (100-300) | 2.000 (1.000-3.000) | 2.00 (1.00-3.00) | 2.00 (1.00-3.00) | 1 (0-2) | 0 |"
	if !strings.Contains(b.String(), want) {
		t.Fatalf("report:\n%s\nwant the row %s", b.String(), want)
	}
}
