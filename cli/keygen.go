package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/gossip"
)

func newKeygenCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Print a new gossip encryption key",
		Long: `Print a random 32-byte key, base64-encoded, for --encrypt. Give every
agent of a cluster the same key; agents without it cannot join.`,
		Example: "  zrpcd agent --encrypt \"$(zrpcd keygen)\"",
		Args:    cobra.NoArgs,
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
