package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/testcluster"
)

// logRecorder passes records on to its Handler and keeps each one as a
// line of its message and attributes.
type logRecorder struct {
	slog.Handler
	mu    *sync.Mutex
	lines *[]string
}

func newLogRecorder(t *testing.T, name string) (*slog.Logger, func() []string) {
	h := logRecorder{Handler: testlog.New(t, name).Handler(), mu: new(sync.Mutex), lines: new([]string)}
	return slog.New(h), func() []string {
		h.mu.Lock()
		defer h.mu.Unlock()
		return append([]string(nil), *h.lines...)
	}
}

func (h logRecorder) Handle(ctx context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += fmt.Sprintf(" %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	*h.lines = append(*h.lines, line)
	h.mu.Unlock()
	return h.Handler.Handle(ctx, r)
}

func (h logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return logRecorder{Handler: h.Handler.WithAttrs(as), mu: h.mu, lines: h.lines}
}

func (h logRecorder) WithGroup(name string) slog.Handler {
	return logRecorder{Handler: h.Handler.WithGroup(name), mu: h.mu, lines: h.lines}
}

// TestStartWaitsForAnAgentNotUpYet: a service started before its agent
// (both started by the same unit, or zrpcd restarting) keeps trying to
// register within Start's context, logging each failed attempt with the
// agent's address, and Start returns once the agent is up and the
// instance registered; it had failed at once.
func TestStartWaitsForAnAgentNotUpYet(t *testing.T) {
	c := testcluster.New(t, 1)
	c.Kill(0)
	log, lines := newLogRecorder(t, "server")
	srv, err := NewServer(ServerConfig{
		Name: "user.rpc", ListenOn: "127.0.0.1:0", ID: "u1", Agents: []string{c.GRPCAddr(0)}, DrainDelay: 10 * time.Millisecond,
	}, WithServerLogger(log), WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	started := make(chan error, 1)
	go func() { started <- srv.Start(ctx) }()

	retried := func() bool {
		for _, l := range lines() {
			if strings.Contains(l, "retrying") && strings.Contains(l, c.GRPCAddr(0)) {
				return true
			}
		}
		return false
	}
	testwait.ForExplained(t, 30*time.Second, "Start to log a failed attempt naming the agent, and that it retries", func() bool {
		select {
		case err := <-started:
			t.Fatalf("Start with no agent up = %v, want it to keep trying until the agent is up", err)
		default:
		}
		return retried()
	}, func() string { return strings.Join(lines(), "\n") })

	c.Restart(0)
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("Start = %v, want it registered once the agent is up", err)
		}
	case <-ctx.Done():
		t.Fatal("Start had not returned a minute after it began")
	}
	c.WaitFor(20*time.Second, "u1 registered, passing", func() bool {
		resp, err := c.Registry(0).Get(ctx, &pb.GetRequest{Service: "user.rpc", Consistency: pb.Consistency_STALE})
		return err == nil && len(resp.Instances) == 1 && resp.Instances[0].Address == srv.Addr() &&
			resp.Instances[0].Health == pb.Health_PASSING
	})
}

// TestStartRetriesAnAgentThatRefusesWhileStarting: sessions an agent
// refuses with Unavailable (starting, no Raft leader yet) are asked for
// again until one opens.
func TestStartRetriesAnAgentThatRefusesWhileStarting(t *testing.T) {
	a := &sessionAgent{}
	a.refuse.Store(3)
	srv := newLifecycleServer(t, startSessionAgent(t, a), make(chan struct{}, 1), nil)
	t.Cleanup(func() { srv.Stop(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("Start = %v, want it registered after the agent's refusals", err)
	}
	if got := a.asked.Load(); got != 4 {
		t.Fatalf("sessions asked for = %d, want 4 (3 refused, then 1 opened)", got)
	}
	if got := a.registers.Load(); got != 1 {
		t.Fatalf("registrations = %d, want 1", got)
	}
}

// TestStartFailsAtOnceOnAnAnswerRetryingCannotChange: a session the
// agent refuses for the token, or as invalid, fails Start at the first
// attempt, with the agent's answer, long before Start's context ends;
// the server no longer serves (Done).
func TestStartFailsAtOnceOnAnAnswerRetryingCannotChange(t *testing.T) {
	for _, code := range []codes.Code{codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument} {
		t.Run(code.String(), func(t *testing.T) {
			a := &sessionAgent{refuseCode: code}
			a.refuse.Store(1 << 30)
			srv := newLifecycleServer(t, startSessionAgent(t, a), make(chan struct{}, 1), nil)
			t.Cleanup(func() { srv.Stop(context.Background()) })
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err := srv.Start(ctx)
			if err == nil || !strings.Contains(err.Error(), "refused by the test") || ctx.Err() != nil {
				t.Fatalf("Start = %v (context: %v), want the agent's answer before the context ends", err, ctx.Err())
			}
			if got := a.asked.Load(); got != 1 {
				t.Fatalf("sessions asked for = %d, want 1", got)
			}
			select {
			case <-srv.Done():
			default:
				t.Fatal("Done not closed after a failed Start")
			}
		})
	}
}

// TestStartGivesUpWhenItsContextEnds: with no agent up, Start fails when
// its context ends, saying so, with the last attempt's failure and how
// to start an agent.
func TestStartGivesUpWhenItsContextEnds(t *testing.T) {
	a := &sessionAgent{}
	a.refuse.Store(1 << 30)
	srv := newLifecycleServer(t, startSessionAgent(t, a), make(chan struct{}, 1), nil)
	t.Cleanup(func() { srv.Stop(context.Background()) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan error, 1)
	go func() { started <- srv.Start(ctx) }()
	testwait.For(t, 20*time.Second, "two refused sessions", func() bool { return a.asked.Load() >= 2 })
	cancel()
	var err error
	select {
	case err = <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("Start had not returned 20s after its context ended")
	}
	for _, want := range []string{"as Start's context ended (context canceled)", "agent starting", "is zrpcd running at"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Start = %v, want it to say %q", err, want)
		}
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start = %v, want it to wrap context.Canceled", err)
	}
}
