package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestSingleAgentThroughCLI is issue "one agent, one binary" end to end:
// register, list, get, watch-free reads, bad input, kill -9 and restart.
func TestSingleAgentThroughCLI(t *testing.T) {
	_, zrpcctl := binaries(t)
	a := newAgent(t, "n1")
	a.start()
	a.waitLeader()
	addr := a.grpcAddr()
	run := a.mustCtl

	run("service", "register", "user.rpc", "--id", "user-1", "--address", "127.0.0.1:9001", "--zone", "a", "--tag", "canary")
	run("service", "register", "user.rpc", "--id", "user-2", "--address", "127.0.0.1:9002", "--ttl", "30s")
	list := rows(run("service", "list"))
	if len(list) != 1 || list[0][0] != "user.rpc" || list[0][1] != "2" || list[0][2] != "2" {
		t.Fatalf("service list rows = %v, want user.rpc 2 2", list)
	}
	get := rows(run("service", "get", "user.rpc"))
	if len(get) != 2 || get[0][0] != "user-1" || get[0][1] != "127.0.0.1:9001" || get[0][2] != "n1" || get[0][3] != "passing" {
		t.Fatalf("service get rows = %v", get)
	}
	var js []map[string]any
	if err := json.Unmarshal([]byte(run("service", "get", "user.rpc", "-o", "json")), &js); err != nil || len(js) != 2 {
		t.Fatalf("service get -o json: %v (%d items)", err, len(js))
	}
	if st := run("status"); !strings.Contains(st, "Leader") || !strings.Contains(st, "n1") {
		t.Fatalf("status output:\n%s", st)
	}

	// Bad input: a clear error naming the field, nothing stored.
	_, err := ctl(zrpcctl, addr, "service", "register", "user.rpc", "--id", "bad", "--address", "no-port")
	if err == nil || !strings.Contains(err.Error(), "address") {
		t.Fatalf("register with a bad address: %v", err)
	}
	if _, err := ctl(zrpcctl, addr, "service", "deregister", "user.rpc", "nobody"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("deregister unknown: %v", err)
	}

	// kill -9 and restart: every acknowledged registration survives.
	a.kill()
	a.start()
	a.waitLeader()
	get = rows(run("service", "get", "user.rpc"))
	if len(get) != 2 {
		t.Fatalf("after kill -9 and restart: %v", get)
	}

	// A second agent on the same data dir is refused while the first runs.
	out, err := runAgentOnce(t, a.dataDir)
	if err == nil || !strings.Contains(out, "in use by another zrpcd") {
		t.Fatalf("second agent on the same data dir: %v\n%s", err, out)
	}

	// Clean shutdown exits 0.
	if err := a.stop(); err != nil {
		t.Fatalf("SIGTERM exit: %v", err)
	}
}

// runAgentOnce starts zrpcd on dataDir with free ports and returns its
// output once it exits (it is expected to fail fast).
func runAgentOnce(t *testing.T, dataDir string) (string, error) {
	zrpcd, _ := binaries(t)
	x := newAgent(t, "n1")
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		defer close(done)
		out, err = execCombined(zrpcd, "agent", "--name", "n1", "--data-dir", dataDir,
			"--grpc-port", itoa(x.grpcPort), "--raft-port", itoa(x.raftPort), "--gossip-port", itoa(x.gossipPort), "--http-port", itoa(x.httpPort),
			"--dns-port", "0")
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("second agent did not exit")
	}
	return string(out), err
}

// TestBadFlagsStopBeforeDataDir: a malformed flag or config stops the agent
// with the reason before it creates anything.
func TestBadFlagsStopBeforeDataDir(t *testing.T) {
	zrpcd, _ := binaries(t)
	dir := t.TempDir() + "/never"
	out, err := execCombined(zrpcd, "agent", "--data-dir", dir, "--grpc-port", "99999", "--log-level", "loud")
	if err == nil || !strings.Contains(string(out), "grpc_port") || !strings.Contains(string(out), "log_level") {
		t.Fatalf("bad flags: %v\n%s", err, out)
	}
	if exists(dir) {
		t.Fatal("the agent created its data dir despite a bad config")
	}
}
