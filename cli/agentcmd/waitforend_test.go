package agentcmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeAgent is a started agent whose channels the test closes.
type fakeAgent struct {
	left, failed, refused chan struct{}
	failure               string
	refusal               error
	reloads               int
}

func newFakeAgent() *fakeAgent {
	return &fakeAgent{left: make(chan struct{}), failed: make(chan struct{}), refused: make(chan struct{})}
}

func (a *fakeAgent) Left() <-chan struct{}       { return a.left }
func (a *fakeAgent) RaftFailed() <-chan struct{} { return a.failed }
func (a *fakeAgent) RaftFailure() string         { return a.failure }
func (a *fakeAgent) ReloadTLS() error            { a.reloads++; return nil }
func (a *fakeAgent) Refused() <-chan struct{}    { return a.refused }
func (a *fakeAgent) Refusal() error              { return a.refusal }

// TestAgentExitsWithAnErrorWhenItsRaftNodeFailed: an agent whose Raft node
// stopped after a failed fsync shuts down with an error naming it (the
// process exits non-zero, for a supervisor to restart it); leaving the
// cluster, a signal or the end of ctx end it without one, and SIGHUP
// reloads the certificates and waits on.
func TestAgentExitsWithAnErrorWhenItsRaftNodeFailed(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var got os.Signal
	wait := func(a *fakeAgent, sigs, hup chan os.Signal, ctx context.Context) error {
		t.Helper()
		done := make(chan error, 1)
		go func() {
			var err error
			got, err = waitForEnd(ctx, a, sigs, hup, true, log)
			done <- err
		}()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("waitForEnd did not return")
			return nil
		}
	}

	a := newFakeAgent()
	a.failure = "fsync of the Raft log failed (input/output error): check the disk, then restart the agent"
	hup := make(chan os.Signal, 1)
	hup <- syscall.SIGHUP
	go func() {
		time.Sleep(20 * time.Millisecond)
		close(a.failed)
	}()
	err := wait(a, make(chan os.Signal), hup, t.Context())
	if err == nil || !strings.Contains(err.Error(), a.failure) {
		t.Fatalf("waitForEnd after the Raft node failed = %v, want an error naming %q", err, a.failure)
	}
	if a.reloads != 1 {
		t.Errorf("SIGHUP reloaded the certificates %d times, want once", a.reloads)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "input/output error") {
		t.Errorf("no ERROR line naming the failure in the log:\n%s", logs.String())
	}

	a = newFakeAgent()
	a.refusal = errors.New("name taken: an agent named n2 is alive at 10.0.0.2:8402")
	close(a.refused)
	if err := wait(a, make(chan os.Signal), make(chan os.Signal), t.Context()); !errors.Is(err, a.refusal) {
		t.Errorf("waitForEnd after the cluster refused the agent = %v, want %v", err, a.refusal)
	}

	a = newFakeAgent()
	close(a.left)
	if err := wait(a, make(chan os.Signal), make(chan os.Signal), t.Context()); err != nil {
		t.Errorf("waitForEnd after leaving = %v, want nil", err)
	}
	sigs := make(chan os.Signal, 1)
	sigs <- syscall.SIGTERM
	if err := wait(newFakeAgent(), sigs, make(chan os.Signal), t.Context()); err != nil || got != syscall.SIGTERM {
		t.Errorf("waitForEnd after SIGTERM = %v, %v; want SIGTERM, nil", got, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := wait(newFakeAgent(), make(chan os.Signal), make(chan os.Signal), ctx); err != nil {
		t.Errorf("waitForEnd after ctx ended = %v, want nil", err)
	}
}

// TestSignalDuringStartStopsIt: SIGINT while the agent starts ends the
// start (its context), and says so; a start that ends before any signal
// is not interrupted, and a signal that comes as it succeeds is reported
// so that the agent shuts down rather than lose it.
func TestSignalDuringStartStopsIt(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	sigs := make(chan os.Signal, 1)
	slow := func(ctx context.Context) error {
		sigs <- syscall.SIGINT // Ctrl-C while it starts
		<-ctx.Done()
		return ctx.Err()
	}
	done := make(chan struct{})
	var got os.Signal
	var err error
	go func() {
		defer close(done)
		got, err = startInterruptibly(context.Background(), slow, sigs, log)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a start given SIGINT did not stop")
	}
	if got != syscall.SIGINT || err == nil || !strings.Contains(err.Error(), "interrupted by interrupt") {
		t.Fatalf("start interrupted: signal %v, err %v; want SIGINT and an error saying so", got, err)
	}

	if got, err := startInterruptibly(context.Background(), func(context.Context) error { return nil }, make(chan os.Signal), log); got != nil || err != nil {
		t.Fatalf("a start without a signal: %v, %v", got, err)
	}
	late := make(chan os.Signal, 1)
	got, err = startInterruptibly(context.Background(), func(ctx context.Context) error {
		late <- syscall.SIGTERM
		<-ctx.Done() // taken: the start succeeds all the same, past its last step
		return nil
	}, late, log)
	if got != syscall.SIGTERM || err != nil {
		t.Fatalf("a signal as the start succeeded: %v, %v; want it reported, to shut down", got, err)
	}
}

// TestASlowStartIsNotCutShort: the context an agent starts under ends by
// signal (or its parent) only, never by a timer: the start's steps do not
// wait on it, so a timer could not stop a hung step, and would fail the
// start of an agent whose Raft snapshot or blob store takes longer than
// it to open once that step was done, at every restart.
func TestASlowStartIsNotCutShort(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	start := func(ctx context.Context) error {
		if d, ok := ctx.Deadline(); ok {
			return fmt.Errorf("the start must be over by %s, however long its stores take to open", d.Format(time.RFC3339))
		}
		return ctx.Err()
	}
	if got, err := startInterruptibly(context.Background(), start, make(chan os.Signal), log); got != nil || err != nil {
		t.Fatalf("start without a signal: %v, %v", got, err)
	}
}

// TestSIGHUPSaysWhatItReloaded: SIGHUP reloads only the TLS files; an
// agent says at INFO what it did, also when it runs without TLS and there
// is nothing to reload, and that other settings take a restart: an
// operator who edited the config and sent SIGHUP otherwise saw nothing and
// took the change as applied.
func TestSIGHUPSaysWhatItReloaded(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tlsOn   bool
		reloads int
		says    string
	}{
		{"without TLS", false, 0, "nothing to reload: no TLS configured"},
		{"with TLS", true, 1, "TLS files reloaded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			a := newFakeAgent()
			hup := make(chan os.Signal) // unbuffered: the second send waits until the first was handled
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() {
				_, err := waitForEnd(ctx, a, make(chan os.Signal), hup, tc.tlsOn, log)
				done <- err
			}()
			hup <- syscall.SIGHUP
			hup <- syscall.SIGHUP
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("waitForEnd = %v, want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("waitForEnd did not return after its context ended")
			}
			if a.reloads != 2*tc.reloads {
				t.Errorf("two SIGHUPs reloaded the certificates %d times, want %d", a.reloads, 2*tc.reloads)
			}
			var lines []string
			for line := range strings.Lines(logs.String()) {
				if strings.Contains(line, "SIGHUP") {
					lines = append(lines, line)
				}
			}
			if len(lines) != 2 {
				t.Fatalf("log lines about SIGHUP: %q, want one for each of the two", lines)
			}
			for _, line := range lines {
				if !strings.Contains(line, "level=INFO") || !strings.Contains(line, tc.says) || !strings.Contains(line, "restart") {
					t.Errorf("SIGHUP logged %q, want an INFO line saying %q and that other settings take a restart", line, tc.says)
				}
			}
		})
	}
}
