//go:build linux

package robustness

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/client"
)

// agentProcess is one zrpcd agent run as its own process, on its own
// loopback address, across the incarnations the faults give it: every
// incarnation uses the same name, data dir and ports. Its output (stdout and
// stderr of every incarnation, each behind a header line) is kept for the
// panic scan and for the log tail a failing run prints.
type agentProcess struct {
	t       *testing.T
	zrpcd   string
	name    string
	ip      string
	dataDir string
	flags   []string // besides name, data dir, bind and ports

	grpcPort, raftPort, gossipPort, httpPort int

	mu          sync.Mutex
	out         bytes.Buffer
	cmd         *exec.Cmd
	exited      chan struct{} // closed when the current incarnation has exited
	signalled   bool          // the test sent the current incarnation SIGKILL or SIGTERM
	paused      bool          // SIGSTOPped and not yet continued
	incarnation int
	lastExit    string   // how the last incarnation that exited ended
	surprises   []string // incarnations that exited without being signalled
}

// buildZrpcd builds zrpcd into dir and returns the binary's path.
func buildZrpcd(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "zrpcd")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/zrpcio/zrpc/cmd/zrpcd").CombinedOutput()
	if err != nil {
		t.Fatalf("go build zrpcd: %v\n%s", err, out)
	}
	return bin
}

func newAgentProcess(t *testing.T, zrpcd, name, ip, dataDir string, flags []string) *agentProcess {
	a := &agentProcess{t: t, zrpcd: zrpcd, name: name, ip: ip, dataDir: dataDir, flags: flags}
	a.pickPorts()
	t.Cleanup(a.stop)
	return a
}

// pickPorts chooses four ports free on the agent's address (the gossip one
// free for UDP too).
func (a *agentProcess) pickPorts() {
	ports := make([]int, 4)
	for i := range ports {
		for ports[i] == 0 {
			ln, err := net.Listen("tcp", net.JoinHostPort(a.ip, "0"))
			if err != nil {
				a.t.Fatalf("%s: find a free port on %s: %v", a.name, a.ip, err)
			}
			port := ln.Addr().(*net.TCPAddr).Port
			ln.Close()
			if i == 2 { // gossip: UDP as well
				pc, err := net.ListenPacket("udp", net.JoinHostPort(a.ip, strconv.Itoa(port)))
				if err != nil {
					continue
				}
				pc.Close()
			}
			ports[i] = port
		}
	}
	a.grpcPort, a.raftPort, a.gossipPort, a.httpPort = ports[0], ports[1], ports[2], ports[3]
}

func (a *agentProcess) grpcAddr() string {
	return net.JoinHostPort(a.ip, strconv.Itoa(a.grpcPort))
}

func (a *agentProcess) gossipAddr() string {
	return net.JoinHostPort(a.ip, strconv.Itoa(a.gossipPort))
}

// start runs a new incarnation, `zrpcd agent` or `zrpcd agent join
// ADDR...`, and waits until it answers Status. Ports are picked before the
// process binds them, so something else may take one in between: a first
// start that fails with "address already in use" is retried on new ports;
// later starts (the agent's addresses are in the Raft configuration by
// then) are retried on the same ones.
func (a *agentProcess) start(join []string) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var from int
		if from, err = a.launch(join); err == nil {
			return nil
		}
		a.mu.Lock()
		inUse := strings.Contains(a.out.String()[from:], "address already in use")
		first := a.incarnation == 1
		if inUse {
			// Retried here: another process (a test running beside)
			// held one of its ports, which is not the agent's doing.
			a.surprises = slices.DeleteFunc(a.surprises, func(s string) bool {
				return strings.HasPrefix(s, fmt.Sprintf("incarnation %d exited", a.incarnation))
			})
		}
		a.mu.Unlock()
		if !inUse {
			return err
		}
		if first {
			a.pickPorts()
		} else {
			time.Sleep(time.Second)
		}
	}
	return err
}

// launch starts one incarnation; it returns where that incarnation's output
// begins, and an error when it exited before answering.
func (a *agentProcess) launch(join []string) (int, error) {
	args := []string{"agent"}
	if len(join) > 0 {
		args = append(append(args, "join"), join...)
	}
	args = append(args, "--name", a.name, "--data-dir", a.dataDir, "--bind", a.ip,
		"--grpc-port", strconv.Itoa(a.grpcPort), "--raft-port", strconv.Itoa(a.raftPort),
		"--gossip-port", strconv.Itoa(a.gossipPort), "--http-port", strconv.Itoa(a.httpPort))
	args = append(args, "--dns-port", "0") // many agents per test: none on DNS's default port
	args = append(args, a.flags...)
	cmd := exec.Command(a.zrpcd, args...)
	// The agents die with the test process, even when it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	w := &agentOutput{a: a}
	cmd.Stdout, cmd.Stderr = w, w

	a.mu.Lock()
	a.incarnation++
	from := a.out.Len()
	fmt.Fprintf(&a.out, "=== %s incarnation %d at %s: zrpcd %s\n", a.name, a.incarnation,
		time.Now().Format("15:04:05.000"), strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		a.mu.Unlock()
		return from, fmt.Errorf("start %s: %w", a.name, err)
	}
	exited := make(chan struct{})
	a.cmd, a.exited, a.signalled, a.paused = cmd, exited, false, false
	incarnation := a.incarnation
	a.mu.Unlock()

	go a.reap(cmd, exited, incarnation)
	if err := a.waitAnswering(exited); err != nil {
		return from, err
	}
	return from, nil
}

// reap waits for one incarnation to exit and records an exit the test did
// not cause. Every incarnation is reaped: stop waits for the last one.
func (a *agentProcess) reap(cmd *exec.Cmd, exited chan struct{}, incarnation int) {
	err := cmd.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	fmt.Fprintf(&a.out, "=== %s incarnation %d exited at %s: %v\n", a.name, incarnation,
		time.Now().Format("15:04:05.000"), exitStatus(err))
	a.lastExit = exitStatus(err)
	if !a.signalled {
		a.surprises = append(a.surprises, fmt.Sprintf("incarnation %d exited by itself (%v)", incarnation, exitStatus(err)))
	}
	a.cmd = nil
	close(exited)
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// waitAnswering waits until the agent answers Status, or exits.
func (a *agentProcess) waitAnswering(exited chan struct{}) error {
	cl, err := client.New(client.Config{Endpoints: []string{a.grpcAddr()}, DialTimeout: time.Second})
	if err != nil {
		return fmt.Errorf("client of %s: %w", a.name, err)
	}
	defer cl.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("%s exited before answering", a.name)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cl.Status(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not answer Status after 30s: %w", a.name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// running reports whether an incarnation runs (paused or not).
func (a *agentProcess) running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cmd != nil
}

func (a *agentProcess) isPaused() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.paused
}

// signal sends sig to the running incarnation; SIGKILL and SIGTERM mark
// its exit as caused by the test. It returns the incarnation's exit
// channel, nil when none runs.
func (a *agentProcess) signal(sig syscall.Signal) chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return nil
	}
	switch sig {
	case syscall.SIGKILL, syscall.SIGTERM:
		a.signalled = true
	case syscall.SIGSTOP:
		a.paused = true
	case syscall.SIGCONT:
		a.paused = false
	}
	fmt.Fprintf(&a.out, "=== %s: test sends %s at %s\n", a.name, sig, time.Now().Format("15:04:05.000"))
	a.cmd.Process.Signal(sig)
	return a.exited
}

// kill sends SIGKILL and waits for the process to be gone.
func (a *agentProcess) kill() {
	if exited := a.signal(syscall.SIGKILL); exited != nil {
		<-exited
	}
}

// terminate sends SIGTERM, the graceful shutdown, and waits up to timeout
// for a clean exit. It returns what went wrong: an exit status other than
// 0, or no exit in time (then the process is killed).
func (a *agentProcess) terminate(timeout time.Duration) error {
	exited := a.signal(syscall.SIGTERM)
	if exited == nil {
		return nil
	}
	select {
	case <-exited:
	case <-time.After(timeout):
		a.kill()
		return fmt.Errorf("%s still running %s after SIGTERM (killed)", a.name, timeout)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.lastExit != exitStatus(nil) {
		return fmt.Errorf("%s after SIGTERM: %s", a.name, a.lastExit)
	}
	return nil
}

// stop ends whatever runs, a paused incarnation too.
func (a *agentProcess) stop() {
	a.signal(syscall.SIGCONT)
	a.kill()
}

func (a *agentProcess) output() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.out.String()
}

// tail returns the last n lines of the agent's output.
func (a *agentProcess) tail(n int) string {
	lines := strings.Split(strings.TrimRight(a.output(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (a *agentProcess) exitedByThemselves() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.surprises...)
}

// panicSign matches what a Go panic or fatal runtime error prints, and the
// record of a panic the agent's gRPC server recovered.
var panicSign = regexp.MustCompile(`(?m)^panic: |^fatal error: |panic in gRPC handler|goroutine \d+ \[`)

// panicExcerpt returns the output around the first sign of a panic, or ""
// when there is none.
func panicExcerpt(out string) string {
	loc := panicSign.FindStringIndex(out)
	if loc == nil {
		return ""
	}
	start := strings.LastIndex(out[:loc[0]], "\n") + 1
	for range 3 { // a few lines of what came before
		if i := strings.LastIndex(out[:max(start-1, 0)], "\n"); i >= 0 {
			start = i + 1
		} else {
			start = 0
		}
	}
	lines := strings.SplitN(out[start:], "\n", 40)
	if len(lines) == 40 {
		lines = lines[:39]
	}
	return strings.Join(lines, "\n")
}

// agentOutput appends a process's output to its agent's.
type agentOutput struct{ a *agentProcess }

func (w *agentOutput) Write(p []byte) (int, error) {
	w.a.mu.Lock()
	defer w.a.mu.Unlock()
	return w.a.out.Write(p)
}

// The panic scan runs in every `go test`, like the other checks' own tests:
// it passes an agent's ordinary output and finds each kind of panic.
func TestPanicScanFindsPanicsAndDumps(t *testing.T) {
	ordinary := "time=15:04:05 level=INFO msg=\"agent started\" name=n1\n" +
		"time=15:04:06 level=WARN msg=\"watch stream broke, reconnecting\" err=\"goroutine count high\"\n" +
		"=== n1 incarnation 1 exited at 15:04:07.000: signal: killed\n"
	if got := panicExcerpt(ordinary); got != "" {
		t.Errorf("ordinary output reported as a panic:\n%s", got)
	}
	for _, tc := range []struct{ name, out, want string }{
		{"panic", "panic: runtime error: index out of range [3] with length 3\n\ngoroutine 77 [running]:\nmain.f()\n", "panic: runtime error"},
		{"fatal error", "fatal error: concurrent map writes\n\ngoroutine 9 [running]:\n", "fatal error: concurrent map writes"},
		{"recovered", `time=15:04:05 level=ERROR msg="panic in gRPC handler" method=/zrpc.Registry/Get panic="boom" stack="goroutine 12 [running]:\n..."` + "\n", "panic in gRPC handler"},
		{"dump", "SIGQUIT: quit\nPC=0x46e1c1 m=0 sigcode=0\n\ngoroutine 1 [chan receive]:\n", "goroutine 1 [chan receive]"},
	} {
		got := panicExcerpt(ordinary + tc.out + "time=15:04:08 level=INFO msg=after\n")
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: excerpt %q does not show %q", tc.name, got, tc.want)
		}
	}
}
