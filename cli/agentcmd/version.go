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
		Long: `Print the version of this ` + prog + ` binary, the commit it was built from
(when the build set one) and the Go version that built it. Agents report
theirs to ` + "`zrpcctl version`" + ` and ` + "`zrpcctl members`" + ` (BUILD).`,
		Example: "  " + prog + " version",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s %s\n", prog, cli.VersionString(), runtime.Version())
			return nil
		},
	}
}
