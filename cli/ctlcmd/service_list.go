package ctlcmd

import (
	"context"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/client"
)

func newServiceListCommand(o *options) *cobra.Command {
	var consistency string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the services and how many of their instances pass their checks",
		Long: `List every registered service with its number of instances and how many of
them are passing (routable).`,
		Example: `  zrpcctl service list
  zrpcctl service list --consistency consistent -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := readOptions(consistency)
			if err != nil {
				return err
			}
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				services, _, err := c.List(ctx, opts...)
				if err != nil {
					return err
				}
				rows := make([][]string, 0, len(services))
				for _, s := range services {
					rows = append(rows, []string{s.GetName(),
						strconv.FormatUint(uint64(s.GetInstances()), 10),
						strconv.FormatUint(uint64(s.GetPassing()), 10)})
				}
				return p.table(protoMessages(services), []string{"service", "instances", "passing"}, rows)
			})
		},
	}
	cmd.Flags().StringVar(&consistency, "consistency", "default", consistencyUsage)
	return cmd
}
