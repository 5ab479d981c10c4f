// Package proc runs the benchmarks' child processes (zrpcd agents, etcd
// members, the echo service): it starts them with their output in a log
// file, stops them (SIGTERM, then SIGKILL after a grace period) or kills
// them, waits for their HTTP readiness, reads their CPU time and
// resident memory from /proc, and waits out the windows those are measured
// over (Sleep). It is not a supervisor: nothing restarts.
package proc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StopGrace is how long a process has to exit after SIGTERM before it is
// killed.
const StopGrace = 10 * time.Second

// Process is a child process with its output in a file. Its one goroutine
// waits for the process to exit; Stop and Kill wait for that goroutine.
type Process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	done    chan struct{}
	err     error // the exit status, set before done is closed
}

// Start runs bin with args, its stdout and stderr appended to
// dir/name.log. The child gets SIGKILL if the benchmark dies without
// stopping it (where the platform allows).
func Start(dir, name, bin string, args ...string) (*Process, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &Process{name: name, cmd: cmd, logPath: logPath, logFile: f, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Name is the name the process was started with.
func (p *Process) Name() string { return p.name }

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM, kills the process if it has not exited within
// StopGrace, and waits for it. It is safe to call twice, and after Kill.
func (p *Process) Stop() error {
	if done, _ := p.Exited(); !done {
		_ = p.cmd.Process.Signal(syscall.SIGCONT) // a paused process
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(StopGrace):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	return p.finish()
}

// Kill sends SIGKILL (no goodbye, as a crash) and waits for the process.
func (p *Process) Kill() error {
	if done, _ := p.Exited(); !done {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return p.finish()
}

// Pause stops the process with SIGSTOP, as a paused VM or a hung
// machine: its sockets stay open and nothing answers. Resume continues
// it; Stop and Kill resume it first.
func (p *Process) Pause() error {
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("pause %s: %w", p.name, err)
	}
	return nil
}

// Resume continues a paused process with SIGCONT.
func (p *Process) Resume() error {
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return fmt.Errorf("resume %s: %w", p.name, err)
	}
	return nil
}

func (p *Process) finish() error {
	p.logFile.Close()
	var exit *exec.ExitError
	if p.err != nil && !errors.As(p.err, &exit) {
		return fmt.Errorf("stop %s: %w", p.name, p.err)
	}
	return nil
}

// Tail returns the end of the process's log, for error messages.
func (p *Process) Tail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// WaitHTTP polls url until it answers 200, p exits, or timeout passes.
func WaitHTTP(ctx context.Context, p *Process, url string, timeout time.Duration) error {
	return WaitHTTPWith(ctx, &http.Client{Timeout: time.Second}, p, url, timeout)
}

// WaitHTTPWith is WaitHTTP asking through hc (a client that reaches p
// where the default one cannot, in another network namespace).
func WaitHTTPWith(ctx context.Context, hc *http.Client, p *Process, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if done, err := p.Exited(); done {
			return fmt.Errorf("%s exited before it was ready (%v)", p.name, err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s: %w", p.name, url, ctx.Err())
		case <-tick.C:
		}
	}
}

// FreePorts returns n distinct loopback ports that were free for both TCP
// and UDP a moment ago.
func FreePorts(n int) ([]int, error) {
	var ports []int
	var hold []func() error
	defer func() {
		for _, c := range hold {
			c()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries == 100+n {
			return nil, errors.New("find free ports: no port free for both TCP and UDP in 100 tries")
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		hold = append(hold, ln.Close)
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // taken for UDP: gossip needs both
		}
		hold = append(hold, pc.Close)
		ports = append(ports, port)
	}
	return ports, nil
}

// ProcessesUnder returns the pids of running processes whose command line
// names a path under dir: what a benchmark that keeps its data there
// started. It finds none where there is no /proc.
func ProcessesUnder(dir string) ([]string, error) {
	cmdlines, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		return nil, err
	}
	var pids []string
	for _, f := range cmdlines {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // exited meanwhile
		}
		if strings.Contains(string(b), dir+string(filepath.Separator)) {
			pids = append(pids, filepath.Base(filepath.Dir(f)))
		}
	}
	return pids, nil
}

// GoBuild builds the Go package pkg of the module in dir into out, for
// tests that run the real binaries.
func GoBuild(dir, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// WaitLog polls p's log until it contains text, p exits, or timeout
// passes.
func WaitLog(ctx context.Context, p *Process, text string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if strings.Contains(p.Tail(), text) {
			return nil
		}
		if done, err := p.Exited(); done {
			return fmt.Errorf("%s exited before it logged %q (%v):\n%s", p.name, text, err, p.Tail())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not log %q: %w\n%s", p.name, text, ctx.Err(), p.Tail())
		case <-tick.C:
		}
	}
}

// Command is exec.Command for a child the benchmark talks to through its
// standard input and output: it gets SIGKILL if the benchmark dies without
// stopping it (where the platform allows), as Start's children do.
func Command(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = childAttr()
	return cmd
}

// CheckBinary reports why path cannot be run as a benchmark's binary: no
// path given, not there, or a directory; nil when it can.
func CheckBinary(path string) error {
	if path == "" {
		return errors.New("no path given")
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory", path)
	}
	return nil
}

// Sleep waits d, or until ctx ends (its error then).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
