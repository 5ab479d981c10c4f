package agentcmd

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/gossip"
)

func newKeygenCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Print a new gossip encryption key",
		Long: `Print a random 32-byte key, base64-encoded, for gossip encryption. Give
every agent of a cluster the same key; agents without it cannot join. Store
it in a file only the agent's user can read and pass --encrypt-file (or set
ZRPC_ENCRYPT): a key given as --encrypt shows in the process list.`,
		Example: `  (umask 077; zrpcd keygen > /etc/zrpc/gossip.key)
  zrpcd agent --encrypt-file /etc/zrpc/gossip.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := gossip.GenerateKey()
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), key)
			return nil
		},
	}
}
