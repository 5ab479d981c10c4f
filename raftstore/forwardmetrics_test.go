package raftstore

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/internal/testlog"
)

// wantFailures fails t unless f counted exactly want, every other
// reason zero.
func wantFailures(t *testing.T, what string, f *Forwarder, want map[ForwardFailure]uint64) {
	t.Helper()
	for _, r := range ForwardFailures {
		if got := f.Failures()[r]; got != want[r] {
			t.Errorf("%s: %s failures = %d, want %d", what, r, got, want[r])
		}
	}
}

// TestForwarderCountsAndLogsAWriteThatFoundNoLeader: a write that found
// no leader for leader_wait counts as no_leader and is logged, once a
// minute at most, saying so; a call its caller cancelled is not counted.
func TestForwarderCountsAndLogsAWriteThatFoundNoLeader(t *testing.T) {
	var logs testlog.Buffer
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelWarn)
	cfg.Bootstrap = false // never elects a leader
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s := New(cfg)
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f := NewForwarder(s, ForwardConfig{LeaderWait: 100 * time.Millisecond, Dial: newTestDialer(t).dial})
	for range 2 {
		if _, err := f.Apply(t.Context(), registerCmd(testInstance("api", "0", "n1"))); !errors.Is(err, ErrNoLeader) {
			t.Fatalf("Apply without a leader = %v, want ErrNoLeader", err)
		}
	}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := f.Apply(cancelled, registerCmd(testInstance("api", "0", "n1"))); !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply of a cancelled caller = %v, want Canceled", err)
	}
	wantFailures(t, "two writes without a leader", f, map[ForwardFailure]uint64{ForwardNoLeader: 2})
	out := logs.String()
	if n := strings.Count(out, "a call this agent forwards to the leader failed"); n != 1 {
		t.Errorf("logged %d warnings of the failed writes, want 1:\n%s", n, out)
	}
	for _, want := range []string{"reason=no_leader", `leader="none known"`, "no leader answered"} {
		if !strings.Contains(out, want) {
			t.Errorf("the warning does not say %q:\n%s", want, out)
		}
	}
}

// TestForwarderCountsWhyCallsOnTheLeaderFailed: a forwarded write that
// succeeds counts nothing, nor does one the leader answers with an error
// of the API; one the leader's gRPC server refuses counts as refused,
// one that reaches no leader's API as unreachable, one the leader takes
// and does not answer as deadline.
func TestForwarderCountsWhyCallsOnTheLeaderFailed(t *testing.T) {
	stores, _ := forwardingCluster(t)
	leader := leaderOf(t, stores)
	follower := stores[(indexOf(stores, leader)+1)%len(stores)]
	f := NewForwarder(follower, ForwardConfig{LeaderWait: 300 * time.Millisecond, Dial: newTestDialer(t).dial})
	remoteFails := func(err error) func(context.Context, grpc.ClientConnInterface) error {
		return func(context.Context, grpc.ClientConnInterface) error { return err }
	}
	local := func() error { return nil }
	if _, err := f.Apply(t.Context(), registerCmd(testInstance("api", "0", "n1"))); err != nil {
		t.Fatalf("forwarded Apply: %v", err)
	}
	wantFailures(t, "a forwarded write that succeeded", f, nil)

	if err := f.Write(t.Context(), local, remoteFails(apierr.ToStatus(ErrNotFound))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a write the leader answered NotFound = %v", err)
	}
	wantFailures(t, "a write the leader answered with an API error", f, nil)

	notAgent := status.Error(codes.PermissionDenied, "agent-to-agent API: caller is not an agent of this cluster")
	if err := f.Write(t.Context(), local, remoteFails(notAgent)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a write the leader refused = %v", err)
	}
	want := map[ForwardFailure]uint64{ForwardRefused: 1}
	wantFailures(t, "a write the leader's gRPC server refused", f, want)

	refused := status.Error(codes.Unavailable, "connection refused")
	if err := f.Write(t.Context(), local, remoteFails(refused)); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("a write whose leader is unreachable = %v, want ErrNoLeader", err)
	}
	want[ForwardUnreachable] = 1
	if _, id := follower.Leader(); id != leader.cfg.NodeID {
		t.Skipf("leadership moved during the test (to %q)", id)
	}
	wantFailures(t, "a write whose leader's API is unreachable", f, want)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	f = NewForwarder(follower, ForwardConfig{LeaderWait: time.Minute, Dial: newTestDialer(t).dial})
	err := f.Write(ctx, local, func(ctx context.Context, _ grpc.ClientConnInterface) error {
		<-ctx.Done() // the leader takes the call and never answers
		return status.FromContextError(ctx.Err()).Err()
	})
	if !errors.Is(err, ErrNoLeader) {
		t.Fatalf("a write the leader does not answer = %v, want ErrNoLeader", err)
	}
	if _, id := follower.Leader(); id != leader.cfg.NodeID {
		t.Skipf("leadership moved during the test (to %q)", id)
	}
	wantFailures(t, "a write the leader took and did not answer", f, map[ForwardFailure]uint64{ForwardDeadline: 1})
}
