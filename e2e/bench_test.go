package e2e

import (
	"encoding/json"
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
)

var (
	benchUserOnce sync.Once
	benchUserBin  string
	benchUserErr  error
)

// benchUserBinary builds examples/user once per test binary run, next to
// zrpcd and zrpcctl.
func benchUserBinary(t *testing.T) string {
	t.Helper()
	binaries(t) // makes binDir
	benchUserOnce.Do(func() {
		benchUserBin = filepath.Join(binDir, "bench-user")
		out, err := exec.Command("go", "build", "-o", benchUserBin, "github.com/zrpcio/zrpc/examples/user").CombinedOutput()
		if err != nil {
			benchUserErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if benchUserErr != nil {
		t.Fatalf("go build examples/user: %v", benchUserErr)
	}
	return benchUserBin
}

// startBenchUserService runs examples/user registering with agent a (and
// the others, its Agents list, in that order) and waits until the registry
// holds it as passing. On a lab's agents it runs on the host zrpcctl runs
// on. It returns the service's output.
func startBenchUserService(t *testing.T, a *agent, others ...*agent) *testlog.Buffer {
	t.Helper()
	if a.via != nil {
		return startUserServiceOn(t, a.via, 9000, a, others...)
	}
	return startUserServiceOn(t, nil, freePort(t), a, others...)
}

// startUserServiceOn runs examples/user on lab host h (nil: this
// machine's loopback) at port, registering with agent a and the others.
func startUserServiceOn(t *testing.T, h *netlab.Host, port int, a *agent, others ...*agent) *testlog.Buffer {
	t.Helper()
	bin := benchUserBinary(t)
	dir := t.TempDir()
	listen := "127.0.0.1:" + strconv.Itoa(port)
	if h != nil {
		listen = h.IP + ":" + strconv.Itoa(port)
	}
	conf := "Name: user.rpc\nListenOn: " + listen + "\nAgents:\n"
	for _, ag := range append([]*agent{a}, others...) {
		conf += "  - " + ag.grpcAddr() + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "user.yaml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-f", "user.yaml")
	if h != nil {
		cmd = h.Command(bin, "-f", "user.yaml")
	}
	cmd.Dir = dir
	log := &testlog.Buffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("--- user.rpc (%s) output ---\n%s", listen, log.String())
		}
	})
	waitFor(t, 20*time.Second, "user.rpc at "+listen+" passing in the registry", func() bool {
		out, err := a.ctl("service", "get", "user.rpc", "--passing")
		return err == nil && strings.Contains(out, listen)
	})
	return log
}

// TestBenchLoadsTheExampleServiceThroughTheAgent runs `zrpcctl bench`
// against examples/user found through the registry (zrpc:///user.rpc),
// its types from the service's reflection.
func TestBenchLoadsTheExampleServiceThroughTheAgent(t *testing.T) {
	_, zrpcctl := binaries(t)
	a := newAgent(t, "n1")
	a.start()
	a.waitLeader()
	startBenchUserService(t, a)

	out, err := ctl(zrpcctl, a.grpcAddr(), "bench", "user.rpc/GetUserInfo", "--data", `{"user_id":1}`, "-n", "2000", "-c", "16", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Target   string             `json:"target"`
		Method   string             `json:"method"`
		Requests int64              `json:"requests"`
		Errors   int64              `json:"errors"`
		QPS      float64            `json:"qps"`
		Codes    map[string]int64   `json:"codes"`
		Latency  map[string]float64 `json:"latency_ms"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("bench -o json: %v\n%s", err, out)
	}
	t.Logf("2000 calls at %.0f calls/s, p99 %.2f ms (measured on a shared machine)", r.QPS, r.Latency["p99"])
	if r.Requests != 2000 || r.Errors != 0 || r.Codes["OK"] != 2000 {
		t.Fatalf("requests %d, errors %d, codes %v: want 2000 OK\n%s", r.Requests, r.Errors, r.Codes, out)
	}
	if r.Target != "zrpc:///user.rpc" || r.Method != "user.UserService/GetUserInfo" {
		t.Fatalf("target %q method %q", r.Target, r.Method)
	}

	// A user that does not exist: every call fails, counted by its code.
	out, err = ctl(zrpcctl, a.grpcAddr(), "bench", "user.rpc/GetUserInfo", "--data", `{"user_id":999999}`, "-n", "50", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Codes["NotFound"] != 50 || r.Errors != 50 {
		t.Fatalf("codes %v, want 50 NotFound", r.Codes)
	}

	// Ctrl-C stops a long load and prints what it measured.
	cmd := exec.Command(zrpcctl, "--addr", a.grpcAddr(), "bench", "user.rpc/GetUserInfo", "--data", `{"user_id":1}`,
		"-d", "10m", "-c", "4", "--progress", "-o", "json")
	stdout, stderr := &testlog.Buffer{}, &testlog.Buffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waitFor(t, 20*time.Second, "a progress report on stderr", func() bool { return strings.Contains(stderr.String(), "calls/s") })
	cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		if err == nil || !strings.Contains(stderr.String(), "interrupted after") {
			t.Fatalf("interrupted bench exited with %v, stderr %q: want a failure saying it was interrupted", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("bench still running 20 s after Ctrl-C")
	}
	var ir struct {
		Requests    int64 `json:"requests"`
		Errors      int64 `json:"errors"`
		Interrupted bool  `json:"interrupted"`
	}
	if err := json.Unmarshal([]byte(stdout.String()), &ir); err != nil {
		t.Fatalf("interrupted bench printed no JSON result: %v\n%s", err, stdout.String())
	}
	if !ir.Interrupted || ir.Requests == 0 || ir.Errors != 0 {
		t.Fatalf("interrupted result %+v: want the calls made until then, none failed", ir)
	}
}
