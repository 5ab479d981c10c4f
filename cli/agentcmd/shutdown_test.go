package agentcmd

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/testport"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/node"
)

// agentConfig is one agent on free loopback ports, without HTTP and DNS.
func agentConfig(t *testing.T) node.Config {
	cfg := node.Default()
	cfg.Name = "n1"
	cfg.DataDir = t.TempDir()
	cfg.GRPCPort, cfg.RaftPort, cfg.GossipPort = testport.Free(t), testport.Free(t), testport.Free(t)
	cfg.HTTPPort, cfg.DNSPort = 0, 0
	cfg.GossipProfile = "local"
	cfg.LogLevel = "debug"
	return cfg
}

// startAgent runs runAgent in the background until it is running; the
// channel gets what it returns.
func startAgent(t *testing.T, ctx context.Context, cfg node.Config, errw *lockedBuffer, opts ...node.Option) <-chan error {
	t.Helper()
	var out lockedBuffer
	done := make(chan error, 1)
	go func() { done <- runAgent(ctx, cfg, &out, errw, opts...) }()
	testwait.ForExplained(t, 30*time.Second, "the agent to start", func() bool {
		return strings.Contains(out.String(), "running")
	}, errw.String)
	return done
}

// returned waits until runAgent returns and gives its error.
func returned(t *testing.T, done <-chan error, errw *lockedBuffer) error {
	t.Helper()
	var err error
	testwait.ForExplained(t, 30*time.Second, "runAgent to return", func() bool {
		select {
		case err = <-done:
			return true
		default:
			return false
		}
	}, errw.String)
	return err
}

// holdSIGTERM keeps SIGTERM from ending the test binary while the test
// runs, should one arrive after the agent stopped taking it.
func holdSIGTERM(t *testing.T) {
	held := make(chan os.Signal, 4)
	signal.Notify(held, syscall.SIGTERM)
	t.Cleanup(func() { signal.Stop(held) })
}

// TestSignalSentTwiceAtOnceShutsDownCleanly: a wrapper that sends SIGTERM
// to the agent and then to its process group delivers it twice within a
// moment; the agent takes that as one request and shuts down cleanly
// instead of exiting at once as on a deliberate second signal.
func TestSignalSentTwiceAtOnceShutsDownCleanly(t *testing.T) {
	holdSIGTERM(t)
	cfg := agentConfig(t)
	// The shutdown waits in its gRPC step until the agent has taken the
	// second SIGTERM, so that it is still running when that comes.
	ln := newStuckListener(t)
	errw := &lockedBuffer{onWrite: func(p []byte) {
		if bytes.Contains(p, []byte("came again")) {
			ln.free()
		}
	}}
	done := startAgent(t, t.Context(), cfg, errw, node.WithGRPCListener(ln))

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Sent once the first was taken, so that the two are not merged into
	// one pending signal.
	testwait.ForExplained(t, 30*time.Second, "the agent to take the first SIGTERM", func() bool {
		return strings.Contains(errw.String(), "signal received; shutting down")
	}, errw.String)
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := returned(t, done, errw); err != nil {
		t.Fatalf("runAgent after SIGTERM sent twice = %v, want a clean shutdown; log:\n%s", err, errw.String())
	}
	if log := errw.String(); !strings.Contains(log, "agent stopped") {
		t.Fatalf("the agent did not stop cleanly; log:\n%s", log)
	}
}

// stuckListener is a gRPC listener whose Close waits until free is called,
// as a shutdown step that does not end would.
type stuckListener struct {
	net.Listener
	release chan struct{}
	once    sync.Once
}

// newStuckListener listens on loopback; it is freed when the test ends.
func newStuckListener(t *testing.T) *stuckListener {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &stuckListener{Listener: inner, release: make(chan struct{})}
	t.Cleanup(l.free)
	return l
}

func (l *stuckListener) free() { l.once.Do(func() { close(l.release) }) }

func (l *stuckListener) Close() error {
	<-l.release
	return l.Listener.Close()
}

// TestShutdownThatDoesNotEndExitsWithAnError: a shutdown still running
// after shutdownBound (here a step that never ends) is given up: runAgent
// returns an error, for the process to exit non-zero, that names the step
// it was still waiting for.
func TestShutdownThatDoesNotEndExitsWithAnError(t *testing.T) {
	bound := shutdownBound
	shutdownBound = 2 * time.Second
	t.Cleanup(func() { shutdownBound = bound })
	cfg := agentConfig(t)
	ln := newStuckListener(t)
	errw := &lockedBuffer{}
	t.Cleanup(func() {
		// Let the abandoned Close finish, so that it releases the data dir
		// before the test removes it.
		ln.free()
		testwait.ForExplained(t, 30*time.Second, "the abandoned shutdown to end", func() bool {
			return strings.Contains(errw.String(), "agent stopped")
		}, errw.String)
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := startAgent(t, ctx, cfg, errw, node.WithGRPCListener(ln))

	cancel()
	err := returned(t, done, errw)
	if err == nil || !strings.Contains(err.Error(), "did not finish within 2s") || !strings.Contains(err.Error(), "stop serving gRPC") {
		t.Fatalf("runAgent with a shutdown that does not end = %v; want an error naming the bound and the step \"stop serving gRPC\"", err)
	}
}

// closeStuck is an agent whose Close does not return until the test ends.
type closeStuck struct{ release chan struct{} }

func (a closeStuck) Close() error        { <-a.release; return nil }
func (a closeStuck) ClosingStep() string { return "stop Raft and close its log" }

// TestSecondSignalDuringShutdownExitsAtOnce: during a shutdown that SIGTERM
// started, another signal (the operator's Ctrl-C) exits at once, without
// waiting for the shutdown to end.
func TestSecondSignalDuringShutdownExitsAtOnce(t *testing.T) {
	a := closeStuck{release: make(chan struct{})}
	defer close(a.release)
	sigs := make(chan os.Signal, 1)
	sigs <- syscall.SIGINT
	var logs lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- shutDown(a, syscall.SIGTERM, sigs, time.Hour, slog.New(slog.NewTextHandler(&logs, nil)))
	}()
	err := returned(t, done, &logs)
	if err == nil || !strings.Contains(err.Error(), "forced exit") {
		t.Fatalf("shutDown given SIGINT after SIGTERM = %v, want a forced exit", err)
	}
}

// TestSecondSignalDuringAHungStartExitsAtOnce: a start stuck in a step
// that never looks at its context (a disk that does not answer) is left
// behind by a second signal, which exits at once; the first signal sent
// twice at once (by a wrapper) is not that second signal.
func TestSecondSignalDuringAHungStartExitsAtOnce(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	hung := func(context.Context) error {
		<-release
		return nil
	}
	sigs := make(chan os.Signal, 3)
	sigs <- syscall.SIGTERM
	sigs <- syscall.SIGTERM
	var logs lockedBuffer
	done := make(chan error, 1)
	go func() {
		_, err := startInterruptibly(context.Background(), hung, sigs, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
		done <- err
	}()
	testwait.ForExplained(t, 30*time.Second, "the start to take both SIGTERMs", func() bool {
		return strings.Contains(logs.String(), "came again")
	}, logs.String)
	select {
	case err := <-done:
		t.Fatalf("the start returned (%v) on SIGTERM sent twice at once while its step hung; want it to wait for a second signal", err)
	default:
	}
	sigs <- syscall.SIGINT
	err := returned(t, done, &logs)
	if err == nil || !strings.Contains(err.Error(), "forced exit") {
		t.Fatalf("startInterruptibly given a second signal while its step hung = %v, want a forced exit", err)
	}
}
