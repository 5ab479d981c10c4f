package ctlcmd

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/client"
)

func newBlobRmCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Delete a blob",
		Long: `Delete the blob NAME. It is gone from the registry at once; the agents
delete its shards in the background. There is no undo.`,
		Example: `  zrpcctl blob rm models/v3.bin
  zrpcctl blob rm models/v3.bin -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				resp, err := c.DeleteBlob(ctx, name)
				if err != nil {
					return blobExplain(fmt.Errorf("delete %s: %w", name, err), hintBlobNotFound)
				}
				return p.sentence(resp, "deleted "+name)
			})
		},
	}
}
