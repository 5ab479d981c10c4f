// Package zrpcd starts the zrpc processes the out-of-process benchmarks
// measure: a one-node zrpcd agent on loopback, and the echo service
// (cmd/zrpcecho) registered through it. It only starts them; the caller
// stops them (Process.Stop).
package zrpcd

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/zrpcio/zrpc/bench/internal/proc"
)

// ReadyTimeout bounds an agent's start until /readyz answers 200, and the
// echo service's until it says it is registered.
const ReadyTimeout = 60 * time.Second

// Agent is one zrpcd agent process on loopback.
type Agent struct {
	Proc     *proc.Process
	GRPCAddr string
	HTTPAddr string
}

// StartAgent starts a one-node agent (binary bin) with its data and log in
// dir, extra added to its flags, and waits until it is ready. Ports are
// picked free just before the start, so another process may take one
// first: the start is then tried again, up to three times.
func StartAgent(ctx context.Context, bin, dir string, extra ...string) (*Agent, error) {
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		a, err := startAgentOnce(ctx, bin, dir, attempt, extra)
		if err == nil {
			return a, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func startAgentOnce(ctx context.Context, bin, dir string, attempt int, extra []string) (*Agent, error) {
	ports, err := proc.FreePorts(4)
	if err != nil {
		return nil, err
	}
	grpcPort, raftPort, gossipPort, httpPort := ports[0], ports[1], ports[2], ports[3]
	dataDir := filepath.Join(dir, "data-"+strconv.Itoa(attempt))
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent data dir: %w", err)
	}
	args := append([]string{"agent", "--name", "bench",
		"--data-dir", dataDir, "--bind", "127.0.0.1", "--http-bind", "127.0.0.1",
		"--grpc-port", strconv.Itoa(grpcPort), "--raft-port", strconv.Itoa(raftPort),
		"--gossip-port", strconv.Itoa(gossipPort), "--http-port", strconv.Itoa(httpPort),
		"--dns-port", "0", "--log-level", "warn"}, extra...)
	p, err := proc.Start(dir, "zrpcd-"+strconv.Itoa(attempt), bin, args...)
	if err != nil {
		return nil, err
	}
	readyURL := fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort)
	if err := proc.WaitHTTP(ctx, p, readyURL, ReadyTimeout); err != nil {
		p.Stop()
		return nil, fmt.Errorf("agent: %w\n%s", err, p.Tail())
	}
	return &Agent{Proc: p, GRPCAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(grpcPort)),
		HTTPAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))}, nil
}

// StartEcho starts the echo service (binary bin, cmd/zrpcecho) as service
// name, registered through the agent at agentAddr, with extra added to its
// flags, and waits until it says it is registered.
func StartEcho(ctx context.Context, bin, dir, agentAddr, name string, extra ...string) (*proc.Process, error) {
	args := append([]string{"--agent", agentAddr, "--name", name, "--listen", "127.0.0.1:0"}, extra...)
	p, err := proc.Start(dir, "zrpcecho", bin, args...)
	if err != nil {
		return nil, err
	}
	if err := proc.WaitLog(ctx, p, "listening ", ReadyTimeout); err != nil {
		p.Stop()
		return nil, fmt.Errorf("zrpcecho not registered: %w", err)
	}
	return p, nil
}
