package security

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

// readyTimeout bounds an agent's start until /readyz answers 200.
const readyTimeout = 60 * time.Second

// agent is one zrpcd agent process on loopback.
type agent struct {
	proc     *proc.Process
	grpcAddr string
	httpAddr string
}

// startAgent starts a one-node agent with its data in dir and waits until
// it is ready. With sec set, the agent serves mutual TLS, encrypts gossip
// and requires ACL tokens. Ports are picked free just before the start, so
// another process may take one first: the start is then tried again.
func startAgent(ctx context.Context, bins Binaries, dir string, sec *pki) (*agent, error) {
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		a, err := startAgentOnce(ctx, bins, dir, sec, attempt)
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

func startAgentOnce(ctx context.Context, bins Binaries, dir string, sec *pki, attempt int) (*agent, error) {
	ports, err := proc.FreePorts(4)
	if err != nil {
		return nil, err
	}
	grpcPort, raftPort, gossipPort, httpPort := ports[0], ports[1], ports[2], ports[3]
	dataDir := filepath.Join(dir, "data-"+strconv.Itoa(attempt))
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent data dir: %w", err)
	}
	args := []string{"agent", "--name", "bench",
		"--data-dir", dataDir, "--bind", "127.0.0.1", "--http-bind", "127.0.0.1",
		"--grpc-port", strconv.Itoa(grpcPort), "--raft-port", strconv.Itoa(raftPort),
		"--gossip-port", strconv.Itoa(gossipPort), "--http-port", strconv.Itoa(httpPort),
		"--dns-port", "0",
		// The load registers ever new instances of one service.
		"--max-instances-per-service", "0", "--log-level", "warn"}
	if sec != nil {
		args = append(args, "--tls-ca", sec.ca, "--tls-cert", sec.agentCert, "--tls-key", sec.agentKey,
			"--encrypt-file", sec.gossipKey, "--acl")
	}
	p, err := proc.Start(dir, "zrpcd-"+strconv.Itoa(attempt), bins.Zrpcd, args...)
	if err != nil {
		return nil, err
	}
	readyURL := fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort)
	if err := proc.WaitHTTP(ctx, p, readyURL, readyTimeout); err != nil {
		p.Stop()
		return nil, fmt.Errorf("agent: %w\n%s", err, p.Tail())
	}
	return &agent{proc: p, grpcAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(grpcPort)),
		httpAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))}, nil
}
