package ctlcmd

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/client"
)

func newLeaveCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "leave",
		Short: "Make an agent leave the cluster for good",
		Long: `Make the agent at --addr (the first address only) leave the cluster for
good: it hands Raft leadership to another voter if it leads, announces its
departure, waits until the leader has removed it from Raft and the registry
(its instances go with it), and shuts down. To restart an agent without
leaving, stop it with SIGTERM instead.`,
		Example: `  zrpcctl leave --addr 127.0.0.3:8400`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("timeout") {
				o.timeout = 20 * time.Second // leaving waits for the leader
			}
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				removed, err := c.Leave(ctx)
				if err != nil {
					return err
				}
				addr := c.Endpoints()[0]
				if removed {
					fmt.Fprintf(cmd.OutOrStdout(), "agent at %s left the cluster and is shutting down\n", addr)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "agent at %s announced its departure and is shutting down; the leader did not confirm the removal in time and will reap it after dead_node_reap\n", addr)
				}
				return nil
			})
		},
	}
}
