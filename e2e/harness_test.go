package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/netlab"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testport"
	"github.com/zrpcio/zrpc/internal/testwait"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds zrpcd and zrpcctl once per test binary run.
func binaries(t *testing.T) (zrpcd, zrpcctl string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "zrpc-e2e-bin-")
		if buildErr != nil {
			return
		}
		for _, name := range []string{"zrpcd", "zrpcctl"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, name), "github.com/zrpcio/zrpc/cmd/"+name).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", name, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "zrpcd"), filepath.Join(binDir, "zrpcctl")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// handedOut holds the ports freePort returned: the kernel may give a
// port it just gave (its listener closed) to the next Listen, and two
// agents' or one agent's ports must differ.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: make(map[int]bool)}

// freePort returns a loopback port free for TCP and UDP, below the
// kernel's ephemeral range (testport), that no earlier call returned.
func freePort(t *testing.T) int {
	t.Helper()
	for range 1000 {
		port := testport.Free(t)
		handedOut.Lock()
		seen := handedOut.ports[port]
		handedOut.ports[port] = true
		handedOut.Unlock()
		if !seen {
			return port
		}
	}
	t.Fatal("no loopback port free that was not handed out already")
	return 0
}

// agent is one zrpcd process.
type agent struct {
	t                              *testing.T
	name, dataDir                  string
	grpcPort, raftPort, gossipPort int
	httpPort                       int
	extra                          []string
	ctlArgs                        []string     // zrpcctl flags to ask it whether it answers (--tls-*)
	host                           *netlab.Host // the lab host it runs on; nil: this machine's loopback
	via                            *netlab.Host // the lab host zrpcctl runs on to reach it (with host)
	cmd                            *exec.Cmd
	log                            *testlog.Buffer // the process's output
	cleanup                        bool
	started                        bool // answered once: ports are fixed
	exited                         chan struct{}
	exitErr                        error
}

// waitLeader waits until the agent reports a leader.
func (a *agent) waitLeader() {
	a.t.Helper()
	_, zrpcctl := binaries(a.t)
	waitFor(a.t, 20*time.Second, a.name+" knows a leader", func() bool {
		out, err := ctlFrom(a.via, zrpcctl, a.grpcAddr(), "status", "-o", "json")
		return err == nil && strings.Contains(out, `"leader"`)
	})
}

func newAgent(t *testing.T, name string, extra ...string) *agent {
	return &agent{
		t: t, name: name, dataDir: filepath.Join(t.TempDir(), name),
		grpcPort: freePort(t), raftPort: freePort(t), gossipPort: freePort(t), httpPort: freePort(t),
		extra: extra, log: &testlog.Buffer{},
	}
}

// startThree starts agents n1, n2 and n3 with the extra flags, n2 and n3
// joining n1.
func startThree(t *testing.T, extra ...string) (n1, n2, n3 *agent) {
	t.Helper()
	n1, n2, n3 = newAgent(t, "n1", extra...), newAgent(t, "n2", extra...), newAgent(t, "n3", extra...)
	n1.start()
	n2.start(n1.gossipAddr())
	n3.start(n1.gossipAddr())
	return n1, n2, n3
}

func (a *agent) grpcAddr() string   { return a.ip() + ":" + strconv.Itoa(a.grpcPort) }
func (a *agent) gossipAddr() string { return a.ip() + ":" + strconv.Itoa(a.gossipPort) }

// ip is the address the agent binds: its lab host's, or loopback.
func (a *agent) ip() string {
	if a.host != nil {
		return a.host.IP
	}
	return "127.0.0.1"
}

// start runs `zrpcd agent [join ADDR...]` and waits until the agent
// answers. Ports are picked free before the process binds them, so another
// test can take one in between: a first start that fails with "address
// already in use" is retried on new ports.
func (a *agent) start(join ...string) {
	a.t.Helper()
	if !a.cleanup {
		a.cleanup = true
		a.t.Cleanup(func() {
			a.kill()
			if a.t.Failed() {
				a.t.Logf("--- %s output ---\n%s", a.name, a.log.String())
			}
		})
	}
	for attempt := 0; ; attempt++ {
		if a.launch(join) {
			a.started = true
			return
		}
		inUse := strings.Contains(a.log.String(), "address already in use")
		if a.started || !inUse || attempt == 2 {
			a.t.Fatalf("%s exited before answering", a.name)
		}
		a.grpcPort, a.raftPort, a.gossipPort, a.httpPort = freePort(a.t), freePort(a.t), freePort(a.t), freePort(a.t)
	}
}

// launch starts the process and reports whether it answered; false means
// it exited first.
func (a *agent) launch(join []string) bool {
	zrpcd, zrpcctl := binaries(a.t)
	args := []string{"agent"}
	if len(join) > 0 {
		args = append(append(args, "join"), join...)
	}
	args = append(args, "--name", a.name, "--data-dir", a.dataDir, "--bind", a.ip(),
		"--grpc-port", strconv.Itoa(a.grpcPort), "--raft-port", strconv.Itoa(a.raftPort),
		"--gossip-port", strconv.Itoa(a.gossipPort), "--http-port", strconv.Itoa(a.httpPort))
	args = append(args, "--dns-port", "0") // many agents per test: none on DNS's default port
	args = append(args, a.extra...)
	cmd := exec.Command(zrpcd, args...)
	if a.host != nil {
		cmd = a.host.Command(zrpcd, args...)
	}
	cmd.Stdout, cmd.Stderr = a.log, a.log
	// A process group of its own: tests stop agents (SIGSTOP), and the
	// kernel sends SIGHUP and SIGCONT to an orphaned process group with a
	// stopped member, which the test binary's becomes when the shell that
	// started it exits first. The agent dies with the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.cmd, a.exited = cmd, make(chan struct{})
	go func(done chan struct{}) {
		a.exitErr = cmd.Wait()
		close(done)
	}(a.exited)
	answered := false
	waitFor(a.t, 20*time.Second, a.name+" answers status", func() bool {
		select {
		case <-a.exited:
			return true
		default:
		}
		_, err := ctlFrom(a.via, zrpcctl, a.grpcAddr(), append(a.ctlArgs, "status")...)
		// With ACLs on and no token yet, Unauthenticated is an answer.
		answered = err == nil || strings.Contains(err.Error(), "unauthenticated:")
		return answered
	})
	if !answered {
		a.cmd = nil
	}
	return answered
}

// wait waits up to timeout for the process to exit and returns its error.
func (a *agent) wait(timeout time.Duration) error {
	if a.cmd == nil {
		return nil
	}
	select {
	case <-a.exited:
		a.cmd = nil
		return a.exitErr
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %s", a.name, timeout)
	}
}

// kill sends SIGKILL and reaps the process.
func (a *agent) kill() {
	if a.cmd == nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.wait(10 * time.Second)
}

// stop sends SIGTERM and waits for a clean exit.
func (a *agent) stop() error {
	if a.cmd == nil {
		return nil
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	return a.wait(20 * time.Second)
}

// mustCtl runs zrpcctl against a and returns its stdout; an error fails
// the test.
func (a *agent) mustCtl(args ...string) string {
	a.t.Helper()
	out, err := a.ctl(args...)
	if err != nil {
		a.t.Fatal(err)
	}
	return out
}

// ctl runs zrpcctl against the agent and returns its stdout.
func (a *agent) ctl(args ...string) (string, error) {
	_, zrpcctl := binaries(a.t)
	return ctlFrom(a.via, zrpcctl, a.grpcAddr(), args...)
}

// ctl runs zrpcctl against addr and returns its stdout.
func ctl(zrpcctl, addr string, args ...string) (string, error) {
	return ctlFrom(nil, zrpcctl, addr, args...)
}

// ctlFrom runs zrpcctl against addr (one or more agents, comma
// separated) on lab host via, or on this machine if via is nil.
func ctlFrom(via *netlab.Host, zrpcctl, addr string, args ...string) (string, error) {
	args = append([]string{"--addr", addr}, args...)
	cmd := exec.Command(zrpcctl, args...)
	if via != nil {
		cmd = via.Command(zrpcctl, args...)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("zrpcctl %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// waitFor polls cond (which may run a process: polls are spaced by
// what it takes) until it holds or the deadline passes.
var waitFor = testwait.For

// rows splits table output into rows of fields, without the header.
func rows(out string) [][]string {
	var r [][]string
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i, l := range lines {
		if i == 0 || strings.TrimSpace(l) == "" {
			continue
		}
		r = append(r, strings.Fields(l))
	}
	return r
}
