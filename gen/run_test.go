package gen

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/testcluster"
)

// TestGeneratedServiceRuns generates echo.proto (one RPC of each kind)
// into a new module, writes logic into the generated logic files, re-runs
// gen (the logic must survive), builds the module with `go build`
// (zrpc replaced by this checkout), vets it, runs the service against an
// in-process agent and calls it through the generated client package:
// the generated example command for the unary RPC, and a command of the
// test's own for the three streaming kinds.
func TestGeneratedServiceRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a generated module")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	out := filepath.Join(t.TempDir(), "echo")
	if err := generate(t, "testdata/run/echo.proto", out).Write(); err != nil {
		t.Fatal(err)
	}
	// As generated, with the starting logic of every RPC kind: it builds
	// and passes go vet.
	goRun(t, goBin, out, "vet", "./...")

	edits := map[string]string{
		"saylogic.go.txt":     "internal/logic/saylogic.go",
		"repeatlogic.go.txt":  "internal/logic/repeatlogic.go",
		"collectlogic.go.txt": "internal/logic/collectlogic.go",
		"chatlogic.go.txt":    "internal/logic/chatlogic.go",
		"streamcheck.go.txt":  "cmd/streamcheck/main.go",
	}
	for from, to := range edits {
		copyFile(t, filepath.Join("testdata/run/edits", from), filepath.Join(out, to))
	}
	if err := generate(t, "testdata/run/echo.proto", out).Write(); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	goRun(t, goBin, out, "build", "-o", bin+string(filepath.Separator), "./...")
	goRun(t, goBin, out, "vet", "./...")

	c := testcluster.New(t, 1)
	agent := c.GRPCAddr(0)
	cfg := filepath.Join(out, "etc/test.yaml")
	yaml := "Name: echo.rpc\nListenOn: 127.0.0.1:0\nAgents: [" + agent + "]\nDrainDelay: 50ms\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	svc := start(t, filepath.Join(bin, "echo"), "-f", cfg)
	c.WaitFor(60*time.Second, "echo.rpc registered and passing", func() bool {
		got := echoInstances(c)
		return len(got) == 1 && got[0].Health == pb.Health_PASSING
	})

	t.Run("unary through the generated example command", func(t *testing.T) {
		reply := strings.Join(strings.Fields(runBin(t, filepath.Join(bin, "echoclient"), "-agents", agent, "-wait", "30s")), "")
		if !strings.Contains(reply, `"text":"hellofromecho.rpc"`) || !strings.Contains(reply, `"count":1`) {
			t.Errorf("echoclient printed %q, want the reply of the edited Say logic", reply)
		}
	})
	t.Run("server, client and bidi streaming through the client package", func(t *testing.T) {
		got := runBin(t, filepath.Join(bin, "streamcheck"), agent)
		want := "repeat hi 1\nrepeat hi 2\nrepeat hi 3\ncollect a+b+c 3\nchat X 1\nchat Y 2\nchat done\n"
		if got != want {
			t.Errorf("streamcheck printed\n%s\nwant\n%s", got, want)
		}
	})

	// SIGTERM: the service deregisters and exits cleanly.
	if err := svc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := svc.wait(30 * time.Second); err != nil {
		t.Errorf("service after SIGTERM: %v", err)
	}
	if got := echoInstances(c); len(got) != 0 {
		t.Errorf("after the service stopped the registry still has %v", got)
	}
}

func echoInstances(c *testcluster.Cluster) []*pb.Instance {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Registry(0).Get(ctx, &pb.GetRequest{Service: "echo.rpc", Consistency: pb.Consistency_STALE})
	if err != nil {
		return nil
	}
	return resp.Instances
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// goRun runs the go command in dir without a workspace, letting it record
// the generated module's requirements (everything is in the module cache
// after `go mod download` of this repository).
func goRun(t *testing.T, goBin, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(goBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -mod=mod"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
}

// runBin runs a command to completion and returns its stdout.
func runBin(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(name), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// process is a command running beside the test; its output goes to the
// test log when the test fails.
type process struct {
	cmd  *exec.Cmd
	out  *testlog.Buffer
	done chan error
}

func start(t *testing.T, name string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(name, args...), out: &testlog.Buffer{}, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(name), p.out.String())
		}
	})
	return p
}

// wait waits for the process to exit, up to timeout.
func (p *process) wait(timeout time.Duration) error {
	select {
	case err := <-p.done:
		p.done <- err // for Cleanup
		return err
	case <-time.After(timeout):
		return errors.New("did not exit in time")
	}
}
