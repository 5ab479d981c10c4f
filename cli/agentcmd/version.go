package agentcmd

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/cli"
)

func newVersionCommand(prog string) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s %s\n", prog, cli.VersionString(), runtime.Version())
			return nil
		},
	}
}
