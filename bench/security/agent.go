package security

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// readyTimeout bounds an agent's start until /readyz answers 200.
const readyTimeout = 60 * time.Second

// agent is one zrpcd agent process on loopback.
type agent struct {
	proc     *process
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
	ports, err := freePorts(4)
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
		// The load registers ever new instances of one service.
		"--max-instances-per-service", "0", "--log-level", "warn"}
	if sec != nil {
		args = append(args, "--tls-ca", sec.ca, "--tls-cert", sec.agentCert, "--tls-key", sec.agentKey,
			"--encrypt-file", sec.gossipKey, "--acl")
	}
	p, err := startProcess(dir, "zrpcd-"+strconv.Itoa(attempt), bins.Zrpcd, args...)
	if err != nil {
		return nil, err
	}
	readyURL := fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort)
	if err := waitReady(ctx, p, readyURL); err != nil {
		p.stop()
		return nil, fmt.Errorf("agent: %w\n%s", err, p.tail())
	}
	return &agent{proc: p, grpcAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(grpcPort)),
		httpAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))}, nil
}

// waitReady polls url until it answers 200, p exits, or readyTimeout.
func waitReady(ctx context.Context, p *process, url string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if done, err := p.exited(); done {
			return fmt.Errorf("exited before it was ready (%v)", err)
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
			return fmt.Errorf("not ready at %s: %w", url, ctx.Err())
		case <-tick.C:
		}
	}
}

// freePorts returns n distinct loopback ports that were free for both TCP
// and UDP a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var hold []func() error
	defer func() {
		for _, c := range hold {
			c()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries == 100 {
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
