package ctlcmd

import (
	"context"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

func newServiceGetCommand(o *options) *cobra.Command {
	var (
		consistency string
		passing     bool
	)
	cmd := &cobra.Command{
		Use:   "get SERVICE",
		Short: "Show the instances of a service",
		Long: `Show every instance of SERVICE: address, health, weight, zone, version and
tags. With --passing, only the instances that pass their checks (the ones
clients route to).`,
		Example: `  zrpcctl service get user.rpc
  zrpcctl service get user.rpc --passing -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := readOptions(consistency)
			if err != nil {
				return err
			}
			if passing {
				opts = append(opts, client.PassingOnly())
			}
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				instances, _, err := c.Get(ctx, args[0], opts...)
				if err != nil {
					return err
				}
				rows := make([][]string, 0, len(instances))
				for _, in := range instances {
					rows = append(rows, instanceRow(in))
				}
				return p.table(protoMessages(instances),
					[]string{"id", "address", "health", "weight", "zone", "version", "tags"}, rows)
			})
		},
	}
	cmd.Flags().StringVar(&consistency, "consistency", "default", consistencyUsage)
	cmd.Flags().BoolVar(&passing, "passing", false, "only instances whose health is passing")
	return cmd
}

func instanceRow(in *zrpcpb.Instance) []string {
	return []string{
		in.GetId(),
		in.GetAddress(),
		formatHealth(in.GetHealth()),
		strconv.FormatUint(uint64(in.GetWeight()), 10),
		in.GetZone(),
		in.GetVersion(),
		strings.Join(in.GetTags(), ","),
	}
}
