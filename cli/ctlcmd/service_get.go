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
		Long: `Show every instance of SERVICE: address, the agent that holds it (whose
failure makes it critical), health, weight, zone, version, tags and the last
output of its health check (why it is critical, for one). With --passing,
only the instances that pass their checks (the ones clients route to).`,
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
					[]string{"id", "address", "node", "health", "weight", "zone", "version", "tags", "health_output"}, rows)
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
		in.GetNode(),
		formatHealth(in.GetHealth()),
		strconv.FormatUint(uint64(in.GetWeight()), 10),
		in.GetZone(),
		in.GetVersion(),
		strings.Join(in.GetTags(), ","),
		shorten(in.GetHealthOutput(), maxOutputCell),
	}
}

// maxOutputCell is the most characters of a health check's output the
// table shows (the agent keeps up to 4 KiB; -o json prints all of it).
// It is the last column, so a long one widens no other.
const maxOutputCell = 200

// shorten cuts s to at most n characters, marking the cut with "...".
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-3]) + "..."
}
