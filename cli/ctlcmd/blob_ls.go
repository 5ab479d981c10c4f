package ctlcmd

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/client"
)

func newBlobLsCommand(o *options) *cobra.Command {
	var consistency string
	cmd := &cobra.Command{
		Use:     "ls [PREFIX]",
		Aliases: []string{"list"},
		Short:   "List the blobs whose names start with PREFIX",
		Long: `List the blobs whose names start with PREFIX (every blob without one), sorted
by name: size, erasure coding (k+m, or inline for small blobs kept in the
registry), health and when the put committed. Health is healthy, degraded
(readable, some shards missing or reported corrupt or lost: repair will
rebuild them) or unreadable (a block has fewer than k readable shards),
judged as ` + "`zrpcctl blob stat NAME`" + ` judges it, which shows the shards;
with no leader to ask about reported shards, from placement and agents
alone. PREFIX is a plain string prefix: models/v matches models/v3.bin.
With -o json sizes are exact and created is in unix nanoseconds.

The list comes from the agent's copy of the registry once it has caught up
with the leader, or, with no leader, while its copy is recent (as
--consistency default reads of services); --consistency stale lists its
copy whatever its age.`,
		Example: `  zrpcctl blob ls
  zrpcctl blob ls models/
  zrpcctl blob ls -o json | jq -r '.[] | select(.health != "healthy") | .name'`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var prefix string
			if len(args) == 1 {
				prefix = args[0]
			}
			opts, err := readOptions(consistency)
			if err != nil {
				return err
			}
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				blobs, err := c.ListBlobs(ctx, prefix, opts...)
				if err != nil {
					return err
				}
				rows := make([][]string, 0, len(blobs))
				for _, b := range blobs {
					rows = append(rows, []string{b.GetName(), formatSize(b.GetSize()),
						formatScheme(b.GetDataShards(), b.GetParityShards(), b.GetInline()),
						b.GetHealth(), formatTime(b.GetCreated())})
				}
				return p.table(protoMessages(blobs), []string{"name", "size", "k+m", "health", "created"}, rows)
			})
		},
	}
	cmd.Flags().StringVar(&consistency, "consistency", "default", consistencyUsage)
	return cmd
}
