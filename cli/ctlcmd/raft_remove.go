package ctlcmd

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

func newRaftRemovePeerCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "remove-peer NAME",
		Short: "Remove an agent that is gone from the cluster for good",
		Long: `Remove agent NAME from the Raft configuration and, with every instance and
session it owned, from the registry. The leader does it; any agent forwards
the request. Repair rebuilds the blob shards the agent held on others.

Use it for an agent that is not coming back as it was, e.g. one that lost
its Raft log (raft/wal in its data dir): such an agent refuses to start, and rejoins as a new
member with an empty data dir once it has been removed. An agent the
leader already reaped (failed for longer than dead_node_reap) is out of
Raft but has left the instances registered through it without a session
in the registry, critical ("removed with its agent NAME"): removing it
deletes them. The leader cannot
remove itself, and an agent that is alive should leave instead
(` + "`zrpcctl --addr ITS_ADDR leave`" + `).`,
		Example: `  zrpcctl raft remove-peer n3`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				rev, err := c.RemovePeer(ctx, name)
				if err != nil {
					return fmt.Errorf("remove peer %s: %w", name, err)
				}
				resp := &zrpcpb.RemovePeerResponse{Header: &zrpcpb.ResponseHeader{Revision: rev}}
				return p.sentence(resp, fmt.Sprintf("removed agent %s from the cluster at revision %d", name, rev))
			})
		},
	}
}
