package ctlcmd

import (
	"github.com/spf13/cobra"
)

func newRaftCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "raft",
		Short: "Inspect the Raft cluster that replicates the registry",
		Long: `Commands on the Raft cluster of the agents: the voters and non-voters that
replicate the service registry.`,
		Example: `  zrpcctl raft peers
  zrpcctl raft remove-peer n3`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newRaftPeersCommand(o))
	cmd.AddCommand(newRaftRemovePeerCommand(o))
	return cmd
}
