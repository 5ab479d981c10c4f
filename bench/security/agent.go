package security

import (
	"context"

	"github.com/zrpcio/zrpc/bench/internal/zrpcd"
)

// startAgent starts a one-node agent with its data in dir and waits until
// it is ready. With sec set, the agent serves mutual TLS, encrypts gossip
// and requires ACL tokens.
func startAgent(ctx context.Context, bins Binaries, dir string, sec *pki) (*zrpcd.Agent, error) {
	// The load registers ever new instances of one service.
	args := []string{"--max-instances-per-service", "0"}
	if sec != nil {
		args = append(args, "--tls-ca", sec.ca, "--tls-cert", sec.agentCert, "--tls-key", sec.agentKey,
			"--encrypt-file", sec.gossipKey, "--acl")
	}
	return zrpcd.StartAgent(ctx, bins.Zrpcd, dir, args...)
}
