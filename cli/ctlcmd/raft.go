package ctlcmd

import (
	"github.com/spf13/cobra"
)

func newCtlRaftCommand(o *ctlOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "raft",
		Short: "Inspect the Raft cluster that replicates the registry",
		Long: `Commands on the Raft cluster of the agents: the voters and non-voters that
replicate the service registry.`,
		Example: `  zrpcctl raft peers
  zrpcctl raft remove-peer n3`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newCtlRaftPeersCommand(o))
	cmd.AddCommand(newCtlRaftRemovePeerCommand(o))
	return cmd
}
