package ctlcmd

import (
	"context"
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/cli"
	"github.com/zrpcio/zrpc/client"
)

func newVersionCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of zrpcctl and of the agent",
		Long: `Print the version of zrpcctl and, when an agent of --addr answers, the
agent's. An agent that does not answer is not an error here: only the client
version is printed then.`,
		Example: `  zrpcctl version
  zrpcctl version -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				own := &zrpcpb.VersionResponse{Version: cli.Version, Commit: cli.Commit, GoVersion: runtime.Version()}
				fields := []field{{"Client version", versionString(own)}}
				agent, err := c.Version(ctx)
				if err == nil {
					fields = append(fields, field{"Agent version", versionString(agent)})
				} else {
					fmt.Fprintf(cmd.ErrOrStderr(), "agent version unknown: %v\n", err)
				}
				return p.fields(map[string]proto.Message{"client": own, "agent": agent}, fields)
			})
		},
	}
}

func versionString(v *zrpcpb.VersionResponse) string {
	s := v.GetVersion()
	if v.GetCommit() != "" {
		s += " (" + v.GetCommit() + ")"
	}
	return fmt.Sprintf("%s %s", s, v.GetGoVersion())
}
