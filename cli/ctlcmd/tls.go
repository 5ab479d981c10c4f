package ctlcmd

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/internal/pki"
)

// newTLSCommand is `zrpcctl tls`: the cluster's CA and certificates. It
// needs no agent.
func newTLSCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "Create the cluster CA and the certificates of agents, clients and services",
		Long: `Create what mutual TLS between agents, clients and services needs: one CA
per cluster (ca.pem, ca-key.pem) and certificates it signs.

  agent    --agent:   valid for agent.zrpc, the agent's name, localhost and
                      the IPs given; agents accept only these on the
                      agent-to-agent API and Raft
  client   --client:  zrpcctl and other clients of the agent API; cannot
                      act as an agent
  service  --service: a service built with package rpc, valid for its name
                      (user.rpc), which its clients verify

Give every agent ca.pem, its certificate and its key (--tls-ca, --tls-cert,
--tls-key). Keep ca-key.pem off the agents: it signs new certificates.`,
		Example: `  zrpcctl tls ca create
  zrpcctl tls cert create --agent --name n1 --ip 10.0.0.1
  zrpcctl tls cert create --client --name ops
  zrpcctl tls cert create --service --name user.rpc`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newTLSCACommand(), newTLSCertCommand())
	return cmd
}

// forceHint adds to an error about existing files how to replace them.
func forceHint(err error) error {
	if errors.Is(err, pki.ErrExists) {
		return fmt.Errorf("%w; --force replaces it", err)
	}
	return err
}

// checkDays refuses a --days that pki would read as "the default".
func checkDays(days int) error {
	if days < 1 {
		return fmt.Errorf("invalid --days %d: want at least 1", days)
	}
	return nil
}
